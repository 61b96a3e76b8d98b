"""Checks of a run's files and folders before any model is loaded, each failing with a
:class:`~lm_eval_softreason.errors.UserError` that names the path.

Our models run :func:`check_before_load` once their model_args are validated, before loading
(in any lm-eval front end): the data folder and the local model folder with its weight files. Our console script also runs
:func:`check_cli_args` on its command line before handing over to lm-eval: the data files of
the requested tasks and the ``--use_cache`` databases, which lm-eval opens before any model code
of ours runs.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import struct
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lm_eval_softreason.autoload import flag_values
from lm_eval_softreason.errors import UserError
from lm_eval_softreason.settings import CACHE_CONFIG_KEY

OUR_MODELS = ("softreason", "softreason-vllm")
# lm-eval's --use_cache database is SqliteDict's default table in <prefix>_rank<R>.db.
CACHE_TABLE = "unnamed"
ZIP_MAGIC = b"PK\x03\x04"


def check_before_load(pretrained: Any) -> None:
    """What our models check before loading: ``SOFTREASON_DATA_DIR`` (when set) and a local
    ``pretrained`` folder."""
    from lm_eval_softreason.data import check_data_dir

    check_data_dir()
    check_pretrained(pretrained)


def looks_like_path(name: str) -> bool:
    """A ``pretrained`` that can only be a local path: it starts with ``.``, ``/`` or ``~``, or
    has more folders than a Hub id (``org/name``) can."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def check_pretrained(pretrained: Any) -> None:
    """Refuse a local model path that is missing or not a folder (transformers would take it
    for a malformed Hub id), and weight files that cannot be read whole."""
    if not isinstance(pretrained, (str, os.PathLike)):
        return  # an already loaded model (Python API)
    path = Path(pretrained).expanduser()
    if not path.exists():
        if looks_like_path(str(pretrained)):
            raise UserError(f"model_arg pretrained={str(pretrained)!r}: no such model folder "
                            f"({path.absolute()})")
        return  # a Hub id
    if not path.is_dir():
        raise UserError(f"model_arg pretrained={str(pretrained)!r}: {path} is a file; give the "
                        f"folder that holds the model's config.json and weights")
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        check_weight_file(weights)


def check_weight_file(path: Path) -> None:
    """A weight file must be readable and whole: a safetensors file as long as its header
    says, a zip-format ``.bin`` (torch.save) with its central directory."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if path.suffix == ".safetensors":
                if len(head) < 8:
                    raise UserError(f"weight file {path} is truncated ({len(head)} bytes)")
                (header_len,) = struct.unpack("<Q", head)
                size = path.stat().st_size
                header = _safetensors_header(
                    path, fh.read(header_len) if 8 + header_len <= size else b"")
                ends = [t["data_offsets"][1] for name, t in header.items()
                        if name != "__metadata__"]
                expected = 8 + header_len + max(ends, default=0)
                if size < expected:
                    raise UserError(f"weight file {path} is truncated: {size} bytes, its "
                                    f"header describes {expected}")
            elif head.startswith(ZIP_MAGIC):
                with zipfile.ZipFile(path):
                    pass
    except zipfile.BadZipFile:
        raise UserError(f"weight file {path} is truncated or corrupt (its zip directory "
                        f"cannot be read)") from None
    except OSError as exc:
        raise UserError(f"weight file {path} cannot be read ({exc.strerror})") from None


def _safetensors_header(path: Path, raw: bytes) -> dict[str, Any]:
    """The parsed JSON header of a safetensors file, every tensor with its two offsets."""
    try:
        header = json.loads(raw)
        if isinstance(header, dict) and all(
                name == "__metadata__" or len(t["data_offsets"]) == 2
                for name, t in header.items()):
            return header
    except (ValueError, TypeError, KeyError):
        pass
    raise UserError(f"weight file {path} is not a readable safetensors file (its header is "
                    f"truncated or corrupt)")


def check_cli_args(args: list[str]) -> None:
    """Our console script's checks of an lm-eval command line, before lm-eval runs: the data
    files of our tasks among ``--tasks``, and the ``--use_cache`` databases."""
    from lm_eval_softreason.data import check_data_dir, task_files

    tasks = flag_values(args, "--tasks", "-t")
    if tasks:
        check_data_dir(task_files([t for value in tasks for t in value.split(",") if t]))
    cache = flag_values(args, "--use_cache", "-c")
    if cache:
        model = (flag_values(args, "--model", "-M") or ["hf"])[0]
        check_cache_databases(cache[0], model)


def check_cache_databases(prefix: str, model: str) -> None:
    """Each ``<prefix>_rank<R>.db`` must be a readable SQLite database, and a model other than
    ours must not be handed one that holds softreason results: lm-eval keys its cache on the
    prompt only, so ``--model hf`` would serve softreason's answers as its own."""
    for db in sorted(glob.glob(glob.escape(prefix) + "_rank*.db")):
        try:
            uri = f"file:{quote(os.path.abspath(db))}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True)) as conn:
                check = conn.execute("PRAGMA quick_check").fetchall()
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                ours = CACHE_TABLE in tables and conn.execute(
                    f"SELECT 1 FROM {CACHE_TABLE} WHERE key = ?", (CACHE_CONFIG_KEY,)
                ).fetchone() is not None
        except sqlite3.OperationalError:
            continue  # busy or not openable: lm-eval and the model's own guard will say
        except sqlite3.DatabaseError as exc:
            raise UserError(f"--use_cache {prefix}: {db} is not a readable SQLite database "
                            f"({exc}); move it aside or choose another --use_cache path") from None
        if check != [("ok",)]:
            found = "; ".join(row[0] for row in check).replace("\n", " ")
            raise UserError(f"--use_cache {prefix}: {db} is corrupt (SQLite's quick_check: "
                            f"{found}); move it aside or choose another --use_cache path")
        if ours and model not in OUR_MODELS:
            raise UserError(f"--use_cache {prefix}: {db} holds softreason results, which "
                            f"--model {model} would serve as its own (lm-eval's cache keys on "
                            f"the prompt only); give --model {model} its own --use_cache path")
