"""A compare results folder: where each cell's files live, and writing and reading them safely."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lm_eval_softreason.settings import CELL_SCHEMA, cell_stem


PROGRESS_SUFFIX = ".progress.json"  # cells/<stem>.progress.json: not a cell file


def cell_paths(out: Path, task: str, strategy: str) -> dict[str, Path]:
    """A cell's files; ``progress`` and ``cache`` (the ``use_cache`` prefix, to which lm-eval
    appends ``_rank0.db``) exist only while a softreason-model cell is unfinished."""
    stem = cell_stem(task, strategy)
    cells = out / "cells"
    return {"cell": cells / f"{stem}.json", "samples": cells / f"{stem}.samples.jsonl",
            "trace": cells / f"{stem}.trace.jsonl",
            "progress": cells / f"{stem}{PROGRESS_SUFFIX}", "cache": cells / f"{stem}.cache"}


def remove_cache(prefix: Path) -> None:
    """Delete lm-eval's cache database(s) of ``use_cache`` prefix ``prefix`` with any SQLite
    journal beside them (a journal left beside a new database would be replayed into it)."""
    for path in prefix.parent.glob(f"{prefix.name}_rank*.db*"):
        path.unlink()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None if it is missing, unreadable or not an object (a file an
    interrupted run may have left half-written or never written)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_cell(path: Path) -> dict[str, Any] | None:
    cell = read_json_object(path)
    return cell if cell is not None and cell.get("schema") == CELL_SCHEMA else None


def load_cells(out: Path) -> list[dict[str, Any]]:
    cells = []
    for path in sorted((out / "cells").glob("*.json")):
        if path.name.endswith(PROGRESS_SUFFIX):
            continue
        cell = read_cell(path)
        if cell is None:
            print(f"ignoring unreadable cell {path.name}", file=sys.stderr)
        else:
            cells.append(cell)
    return cells
