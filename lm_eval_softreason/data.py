"""Dataset loaders for our task YAMLs (``custom_dataset: !function lm_eval_softreason.data.<fn>``).

Evaluation must run offline, so every loader first reads the folder named by the
``SOFTREASON_DATA_DIR`` environment variable (upstream files as-is)::

    $SOFTREASON_DATA_DIR/gsm8k/train.jsonl   # {"question": ..., "answer": "... #### N"}
    $SOFTREASON_DATA_DIR/gsm8k/test.jsonl
    $SOFTREASON_DATA_DIR/svamp/SVAMP.json    # arkilpatel/SVAMP, 1000 problems

A typo in a set variable fails loudly instead of silently downloading something else. With the
variable unset (or empty), SVAMP, which lm-eval lacks, comes from the Hugging Face Hub; GSM8K does
not: the ``gsm8k*_offline`` tasks exist only to read local files (lm-eval's own ``gsm8k`` tasks
are the Hub version), so they fail with an error that says so.

lm-eval calls a loader as ``loader(**metadata, **dataset_kwargs)``, so loaders take ``**kwargs``
(task metadata, CLI ``model_args``) and ignore them.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import datasets

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


class DataDirError(RuntimeError):
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


def _read_jsonl(root: Path, path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _read_error(root, path, exc) from exc
    complete = [isinstance(r, dict) and {"question", "answer"} <= r.keys() for r in rows]
    bad = next((i for i, ok in enumerate(complete) if not ok), None)
    if bad is not None:
        raise _read_error(root, path, ValueError(f"line {bad + 1} lacks 'question'/'answer'"))
    return rows


def gsm8k(**kwargs: Any) -> datasets.DatasetDict:
    """GSM8K ``train`` (few-shot pool, 7473 rows) and ``test`` (1319 rows), fields unchanged."""
    root = data_dir()
    if root is None:
        raise DataDirError(
            f"the gsm8k*_offline tasks read local files, but {DATA_DIR_ENV} is unset: set it to "
            "a folder holding gsm8k/train.jsonl and gsm8k/test.jsonl (fields question, answer "
            "ending '#### N'), or run lm-eval's own gsm8k tasks, which load openai/gsm8k from "
            "the Hugging Face Hub"
        )
    train, test = _local_files(root, GSM8K_FILES)
    return datasets.DatasetDict(
        train=datasets.Dataset.from_list(_read_jsonl(root, train)),
        test=datasets.Dataset.from_list(_read_jsonl(root, test)),
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
    return rows


def svamp(**kwargs: Any) -> datasets.DatasetDict:
    """SVAMP as one ``test`` split of all 1000 problems, with ``question`` and ``target`` added.

    SVAMP has no official train/test split (its authors cross-validate), so every problem is
    a test problem; few-shot variants use fixed exemplars instead of a training split.
    """
    root = data_dir()
    rows = _svamp_rows_from_hub() if root is None else _svamp_rows_from_dir(root)
    try:
        test = [_svamp_row(r) for r in rows]
    except (TypeError, ValueError) as exc:
        if root is None:
            raise
        raise _read_error(root, root / SVAMP_FILE, exc) from exc
    return datasets.DatasetDict(test=datasets.Dataset.from_list(test))
