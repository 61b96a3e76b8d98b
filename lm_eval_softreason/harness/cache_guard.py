"""The ``--use_cache`` guard: a database holds the results of one model and configuration.

lm-eval keys its cache on (prompt, gen_kwargs) only, so without this a result searched under
one configuration (or by ``--model hf``) would be served for another.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from lm_eval_softreason.errors import UserError
from lm_eval_softreason.settings import CACHE_CONFIG_KEY

# Counts the questions searched (not fallen back) into a database, for a resumed run's checks.
CACHE_SEARCHED_KEY = "__lm_eval_softreason_searched__"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def guard_cache(db: Any, mine: dict[str, Any]) -> None:
    """Check the settings a ``--use_cache`` database was written under against ``mine`` (the
    model's identity and ``SoftReasonConfig.public_dict()``: the settings whose field metadata
    says they change results), and record ``mine`` in a new one."""
    try:
        stored, size = db.get(CACHE_CONFIG_KEY), len(db)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"--use_cache database {db.filename} is not readable ({exc}); "
                        f"move it aside or choose another --use_cache path") from None
    if stored is None and size > 0:
        raise UserError(
            f"the --use_cache database {db.filename} already holds results of another "
            "model or strategy (it has no softreason configuration); give softreason its "
            "own --use_cache path"
        )
    if stored is not None and stored != mine:
        diff = {k: (stored.get(k), mine.get(k)) for k in sorted(set(stored) | set(mine))
                if stored.get(k) != mine.get(k)}
        raise UserError(
            f"the --use_cache database {db.filename} holds results of a different "
            f"softreason configuration (differences, cached vs now: {diff}); use another "
            "--use_cache path per configuration"
        )
    db[CACHE_CONFIG_KEY] = mine


def weights_fingerprint(pretrained: Any) -> str | None:
    """The sha256 of every weight file of a local model folder, with their names, hashed
    together: a model rebuilt in place (another seed, a fine-tune) gets a new fingerprint even
    at the same file sizes. None for a Hub id (its revision is in the identity instead) or an
    in-memory model. Each file is hashed once per (path, size, mtime); see :func:`file_sha256`."""
    if not isinstance(pretrained, (str, os.PathLike)) or not Path(pretrained).is_dir():
        return None
    files = sorted((str(p.relative_to(pretrained)), file_sha256(p))
                   for p in Path(pretrained).rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """A file's sha256, remembered in ``$XDG_CACHE_HOME/lm_eval_softreason/sha256.json`` under
    its absolute path, size and mtime, so a large checkpoint is read in full only when it
    changed. A cache that cannot be read or written is only a cost, never an error."""
    stat = path.stat()
    key = f"{path.resolve()}\x00{stat.st_size}\x00{stat.st_mtime_ns}"
    store = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                 "lm_eval_softreason", "sha256.json")
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    known = known if isinstance(known, dict) else {}
    known[key] = digest.hexdigest()
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f"{store.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, store)
    except OSError:
        pass
    return known[key]
