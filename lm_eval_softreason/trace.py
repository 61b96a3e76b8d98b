"""Per-question JSONL trace that survives interrupted runs.

Each question is one line written with a single ``write`` + flush + fsync the moment it
finishes. A run killed mid-write can leave at most one partial last line; opening the file
again cuts it off, so a rerun with the same ``trace_path`` appends to a valid file. A resumed
run recomputes the questions whose answers were not cached yet; a record whose ``question``
key the file already holds is not written again, so the trace holds each question once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class TraceWriter:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = repair(self.path)
        self._seen = {r.get("question") for r in read_trace(self.path)} - {None} \
            if self.path.exists() else set()
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        key = record.get("question")
        if key is not None:
            if key in self._seen:
                return
            self._seen.add(key)
        self._fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def repair(path: Path) -> int:
    """Drop a trailing partial line (no final newline); return how many bytes were cut."""
    if not path.exists():
        return 0
    with open(path, "rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
        return len(data) - keep


def read_trace(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a trace file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.endswith("\n") and line.strip()]
