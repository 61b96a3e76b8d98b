"""Per-question JSONL trace that survives interrupted runs.

Each finished question is one line, written and fsynced at once; reopening cuts a partial last
line, and a question already in the file is not written again, so a rerun with the same
``trace_path`` appends to a valid file (docs/architecture.md, "Traces and writer locks").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lm_eval_softreason.errors import UserError
from lm_eval_softreason.jsonl import JsonlError, read_jsonl
from lm_eval_softreason.writer_lock import WriterLock


class TraceError(UserError):
    """A trace file that cannot be written or read; the message names the file (and line)."""


class TraceWriter:
    """Appends records to one trace file, which it holds locked until :meth:`close`."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        _make_folder(self.path)
        rank = int(os.environ.get("RANK", "0") or 0)
        try:
            self._lock = WriterLock(self.path, "trace_path",
                                    ".lock" if rank == 0 else f".rank{rank}.lock")
        except OSError as exc:
            raise _unwritable(self.path, exc) from None
        try:
            self.repaired_bytes = repair(self.path)
            self._seen = {r.get("question") for r in read_trace(self.path)} - {None} \
                if self.path.exists() else set()
            self._fh = open(self.path, "a", encoding="utf-8")
        except BaseException as exc:
            self._lock.release()
            if isinstance(exc, OSError):
                raise _unwritable(self.path, exc) from None
            raise

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
        """Close the file and let another process write it."""
        self._fh.close()
        self._lock.release()


def _unwritable(path: Path, exc: OSError) -> TraceError:
    return TraceError(f"trace_path {path}: cannot write it ({exc.strerror})")


def _make_folder(path: Path) -> None:
    """Create the trace's folder, or say which part of its path is in the way."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()),
                       None)
        why = f"{blocker} is a file, not a folder" if blocker else exc.strerror
        raise TraceError(f"trace_path {path}: cannot create its folder ({why})") from None


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
    """All complete records of a trace file (a partial last line is not one); a line that is
    not a JSON object is an error naming the file and the line."""
    try:
        return read_jsonl(path)
    except JsonlError as exc:
        raise TraceError(f"trace {path}, {exc}") from None
