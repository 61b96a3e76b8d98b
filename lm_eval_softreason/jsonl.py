"""The one JSON-lines reader: traces, lm-eval's samples, digests and data files."""

from __future__ import annotations

import json
import os
from typing import Any


class JsonlError(ValueError):
    """A line that is not a JSON object; the message names the line (callers add the file)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


def read_jsonl(path: str | os.PathLike, *, cut_end: bool = True) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file, blank lines skipped. With ``cut_end``, a last line
    without its newline that does not parse (a writer killed mid-line) is skipped too; every
    other line that is not a JSON object raises :class:`JsonlError`."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                if cut_end and not line.endswith("\n"):
                    break
                raise JsonlError(number, f"not a JSON record ({exc})") from None
            if not isinstance(record, dict):
                raise JsonlError(number, "not a JSON object")
            records.append(record)
    return records
