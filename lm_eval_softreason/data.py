"""Dataset loaders for our task YAMLs (``custom_dataset: !function lm_eval_softreason.data.<fn>``).

Runs must work offline, so loaders read the upstream files under ``$SOFTREASON_DATA_DIR`` and a
bad folder fails loudly instead of downloading; :func:`check_data_dir` makes the same checks
before a model loads (layout and rules: docs/architecture.md, "Offline data").
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import datasets
import yaml

from lm_eval_softreason.errors import UserError
from lm_eval_softreason.jsonl import JsonlError, read_jsonl

DATA_DIR_ENV = "SOFTREASON_DATA_DIR"
GSM8K_FILES = ("gsm8k/train.jsonl", "gsm8k/test.jsonl")
SVAMP_FILE = "svamp/SVAMP.json"
SVAMP_FIELDS = ("Body", "Question", "Answer")
# The Hub copy splits SVAMP's 1000 problems into train (700) and test (300); we rejoin them.
SVAMP_HUB_ID = "ChilleD/SVAMP"

_LAYOUT = (
    "expected layout: <dir>/gsm8k/train.jsonl and <dir>/gsm8k/test.jsonl (fields question, "
    "answer ending '#### N') and <dir>/svamp/SVAMP.json (the upstream SVAMP list of "
    "{ID, Body, Question, Equation, Answer, Type}); unset SOFTREASON_DATA_DIR to load SVAMP "
    "from the Hugging Face Hub instead (the gsm8k*_offline tasks always need the local files)"
)


class DataDirError(UserError):
    """``SOFTREASON_DATA_DIR`` does not hold readable data in the expected layout (or, for GSM8K,
    is unset)."""


def data_dir() -> Path | None:
    """The local data folder, or None when ``SOFTREASON_DATA_DIR`` is unset or empty."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def _local_files(root: Path, relative: tuple[str, ...]) -> list[Path]:
    """Resolve ``relative`` under ``root``, raising one error that lists everything missing."""
    paths = [root / rel for rel in relative]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        where = "missing " + ", ".join(missing) if root.is_dir() else "not an existing folder"
        raise DataDirError(f"{DATA_DIR_ENV}={str(root)!r}: {where}; {_LAYOUT}")
    return paths


def _read_error(root: Path, path: Path, exc: Exception) -> DataDirError:
    return DataDirError(f"{DATA_DIR_ENV}={str(root)!r}: cannot read {path} ({exc}); {_LAYOUT}")


def _read_problems(root: Path, path: Path) -> list[dict[str, Any]]:
    try:
        rows = read_jsonl(path, cut_end=False)
    except (OSError, UnicodeDecodeError, JsonlError) as exc:
        raise _read_error(root, path, exc) from exc
    complete = [{"question", "answer"} <= r.keys() for r in rows]
    bad = next((i for i, ok in enumerate(complete) if not ok), None)
    if bad is not None:
        raise _read_error(root, path, ValueError(f"line {bad + 1} lacks 'question'/'answer'"))
    if not rows:
        raise _read_error(root, path, ValueError("it holds no problems"))
    return rows


def gsm8k(**kwargs: Any) -> datasets.DatasetDict:
    """GSM8K ``train`` (few-shot pool, 7473 rows) and ``test`` (1319 rows), fields unchanged."""
    root = data_dir()
    if root is None:
        raise _gsm8k_unset_error()
    train, test = _local_files(root, GSM8K_FILES)
    return datasets.DatasetDict(
        train=datasets.Dataset.from_list(_read_problems(root, train)),
        test=datasets.Dataset.from_list(_read_problems(root, test)),
    )


def _gsm8k_unset_error() -> DataDirError:
    return DataDirError(
        f"the gsm8k*_offline tasks read local files, but {DATA_DIR_ENV} is unset: set it to "
        "a folder holding gsm8k/train.jsonl and gsm8k/test.jsonl (fields question, answer "
        "ending '#### N'), or run lm-eval's own gsm8k tasks, which load openai/gsm8k from "
        "the Hugging Face Hub"
    )


def join_body_question(body: str, question: str) -> str:
    """Join SVAMP's ``Body`` and ``Question`` into one natural problem statement.

    About a third of the Bodies end without punctuation, mostly in a dangling condition
    ("... If there is a discount of 25 dollars on each pack"). Such a condition reads naturally
    as the start of the question ("..., how much do you have to pay ...?"); any other unfinished
    sentence ("Then he got 10 new customers") is closed with a full stop.
    """
    body, question = " ".join(body.split()), " ".join(question.split())
    if not body:
        return question
    if body[-1] in ".?!":
        return f"{body} {question}"
    last_sentence = re.split(r"(?<=[.?!])\s+", body)[-1]
    # "How ..." -> "how ...". SVAMP questions open with How/What/About/Together/Total, never a
    # name; the check only keeps an all-caps word ("US", "I") as it is.
    capitalised_word = question[:1].isupper() and question[1:2].islower()
    if last_sentence.split()[0].lower() == "if" and capitalised_word:
        return f"{body}, {question[0].lower()}{question[1:]}"
    return f"{body}. {question}"


def format_number(value: float | int | str) -> str:
    """Render an answer as a model writes it: ``51.0`` -> ``"51"``, ``2.5`` -> ``"2.5"``."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"SVAMP answer must be a finite number, got {value!r}")
    return str(int(number)) if number.is_integer() else repr(number)


def _svamp_row(row: dict[str, Any]) -> dict[str, Any]:
    """Add ``question`` (the joined text) and ``target`` (the answer as text); keep the rest."""
    return {
        **row,
        "question": join_body_question(row["Body"], row["Question"]),
        "target": format_number(row["Answer"]),
    }


def _id_number(row: dict[str, Any]) -> int | None:
    match = re.search(r"(\d+)$", str(row.get("ID", "")))
    return int(match.group(1)) if match else None


def _svamp_rows_from_hub() -> list[dict[str, Any]]:
    """All 1000 problems from the Hub copy, in upstream order when every ID is ``chal-N``."""
    splits = datasets.load_dataset(SVAMP_HUB_ID)
    rows = [dict(r) for name in sorted(splits) for r in splits[name]]
    if all(_id_number(r) is not None for r in rows):
        rows.sort(key=_id_number)
    return rows


def _svamp_rows_from_dir(root: Path) -> list[dict[str, Any]]:
    (path,) = _local_files(root, (SVAMP_FILE,))
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _read_error(root, path, exc) from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _read_error(root, path, ValueError("top level must be a list of objects"))
    bad = next((i for i, r in enumerate(rows) if not set(SVAMP_FIELDS) <= r.keys()), None)
    if bad is not None:
        raise _read_error(root, path, ValueError(f"item {bad} lacks one of {SVAMP_FIELDS}"))
    if not rows:
        raise _read_error(root, path, ValueError("it holds no problems"))
    return rows


def _svamp_test_rows(root: Path) -> list[dict[str, Any]]:
    """The local SVAMP file's problems with ``question`` and ``target`` added."""
    rows = _svamp_rows_from_dir(root)
    try:
        return [_svamp_row(r) for r in rows]
    except (TypeError, ValueError) as exc:
        raise _read_error(root, root / SVAMP_FILE, exc) from exc


def svamp(**kwargs: Any) -> datasets.DatasetDict:
    """SVAMP as one ``test`` split of all 1000 problems, with ``question`` and ``target`` added.

    SVAMP has no official train/test split (its authors cross-validate), so every problem is
    a test problem; few-shot variants use fixed exemplars instead of a training split.
    """
    root = data_dir()
    if root is None:
        test = [_svamp_row(r) for r in _svamp_rows_from_hub()]
    else:
        test = _svamp_test_rows(root)
    return datasets.DatasetDict(test=datasets.Dataset.from_list(test))


# What each of our loaders reads under the data folder.
LOADER_FILES: dict[str, tuple[str, ...]] = {"gsm8k": GSM8K_FILES, "svamp": (SVAMP_FILE,)}
# Files that passed :func:`check_data_dir`, by (path, mtime, size): checked once per process.
_CHECKED: set[tuple[str, int, int]] = set()


def check_data_dir(files: tuple[str, ...] | None = None) -> None:
    """Read and validate the data files a run will load, before any model is loaded.

    ``files`` are paths relative to the data folder (:func:`task_files` gives a run's); None
    means every file of the layout that is there (a model does not know its run's tasks), and
    a folder holding none of them is an error. lm-eval loads a task's data only after the
    model, so without this a missing, empty or malformed file would cost a model load.
    """
    root = data_dir()
    if root is None:
        if files is not None and set(files) & set(GSM8K_FILES):
            raise _gsm8k_unset_error()
        return
    if files is None:
        if not root.is_dir():
            _local_files(root, GSM8K_FILES + (SVAMP_FILE,))
        files = tuple(f for f in GSM8K_FILES + (SVAMP_FILE,) if (root / f).exists())
        if not files:
            raise DataDirError(f"{DATA_DIR_ENV}={str(root)!r}: holds none of the expected "
                               f"files; {_LAYOUT}")
    for path in _local_files(root, files):
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key in _CHECKED:
            continue
        if path.name == Path(SVAMP_FILE).name:
            _svamp_test_rows(root)
        else:
            _read_problems(root, path)
        _CHECKED.add(key)


def task_files(names: list[str]) -> tuple[str, ...]:
    """The data files (relative to the data folder) that our tasks among ``names`` read,
    by task or tag name; other names (lm-eval's tasks, a user's) add none."""
    from lm_eval_softreason.tasks_path import tasks_dir

    index = _task_index(Path(tasks_dir()))
    wanted = {f for name in names for f in index.get(name, ())}
    return tuple(f for f in GSM8K_FILES + (SVAMP_FILE,) if f in wanted)


class _TaskYamlLoader(yaml.SafeLoader):
    """Reads lm-eval task YAMLs, keeping ``!function`` values as their dotted path."""


_TaskYamlLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _task_index(folder: Path) -> dict[str, set[str]]:
    """Task and tag names of the YAMLs under ``folder`` -> the data files their loader reads
    (an ``include`` d file's loader counts)."""

    def config(path: Path) -> dict[str, Any]:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskYamlLoader) or {}
        if "include" in loaded:
            loaded = {**config(path.parent / loaded["include"]), **loaded}
        return loaded

    index: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.yaml")):
        cfg = config(path)
        loader = str(cfg.get("custom_dataset", "")).rsplit(".", 1)[-1]
        tags = cfg.get("tag", [])
        for name in [cfg.get("task"), *([tags] if isinstance(tags, str) else tags)]:
            if name:
                index.setdefault(name, set()).update(LOADER_FILES.get(loader, ()))
    return index
