"""Dataset loaders: local SOFTREASON_DATA_DIR layout, SVAMP's Hub fallback, loud failures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import datasets
import pytest

from lm_eval_softreason import data
from lm_eval_softreason.data import DataDirError, format_number, join_body_question
from lm_eval_softreason.jsonl import JsonlError, read_jsonl

# Real SVAMP rows, chosen for their Body endings.
SVAMP_ROWS = [
    {"ID": "chal-1", "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 "
     "dollars on each pack", "Question": "How much do you have to pay to buy each pack?",
     "Equation": "( 76.0 - 25.0 )", "Answer": 51.0, "Type": "Subtraction"},
    {"ID": "chal-8", "Body": "Paco had 41 cookies. He gave 9 cookies to his friend and ate 18 "
     "cookies.", "Question": "How many more cookies did he eat than those he gave to his friend?",
     "Equation": "( 18.0 - 9.0 )", "Answer": 9.0, "Type": "Subtraction"},
    {"ID": "chal-18", "Body": "In a school there are 732 girls and 761 boys. 682 more girls and 8 "
     "more boys joined the school.", "Question": "How many girls are there in the school now?",
     "Equation": "( 732.0 + 682.0 )", "Answer": 1414.0, "Type": "Addition"},
    {"ID": "chal-36", "Body": "Dan has $ 4. He bought a candy bar for $ 8. Then his friend have "
     "him $ 5", "Question": "How much money is left?", "Equation": "( ( 4.0 - 8.0 ) + 5.0 )",
     "Answer": 1.0, "Type": "Addition"},
]
GSM8K_ROWS = {
    "train": [{"question": "Tom has 2 apples and buys 3 more. How many apples does he have?",
               "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}],
    "test": [{"question": "A box holds 4 pens. How many pens are in 3 boxes?",
              "answer": "4 * 3 = <<4*3=12>>12\n#### 12"},
             {"question": "Ann had $1,200 and spent $200. How much is left?",
              "answer": "1200 - 200 = <<1200-200=1000>>1000\n#### 1,000"}],
}


def write_data_dir(root: Path) -> Path:
    """Write the SOFTREASON_DATA_DIR layout with the sample rows above."""
    (root / "gsm8k").mkdir(parents=True)
    for split, rows in GSM8K_ROWS.items():
        lines = "".join(json.dumps(r) + "\n" for r in rows)
        (root / "gsm8k" / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    (root / "svamp").mkdir()
    (root / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ROWS, indent=4), encoding="utf-8")
    return root


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = write_data_dir(tmp_path / "data")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(root))
    return root


def test_gsm8k_from_data_dir(data_dir: Path) -> None:
    ds = data.gsm8k(version=3.0, unrelated_metadata="ignored")
    assert set(ds) == {"train", "test"}
    assert ds["train"].to_list() == GSM8K_ROWS["train"]
    assert ds["test"].to_list() == GSM8K_ROWS["test"]


def test_svamp_from_data_dir(data_dir: Path) -> None:
    ds = data.svamp()
    assert list(ds) == ["test"]
    rows = ds["test"].to_list()
    assert [r["ID"] for r in rows] == [r["ID"] for r in SVAMP_ROWS]
    assert [r["target"] for r in rows] == ["51", "9", "1414", "1"]
    for row, original in zip(rows, SVAMP_ROWS, strict=True):
        assert {k: row[k] for k in original} == original  # upstream fields kept as they were
    assert rows[0]["question"] == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack, "
        "how much do you have to pay to buy each pack?"
    )
    assert rows[1]["question"] == (
        "Paco had 41 cookies. He gave 9 cookies to his friend and ate 18 cookies. "
        "How many more cookies did he eat than those he gave to his friend?"
    )
    assert rows[3]["question"] == (
        "Dan has $ 4. He bought a candy bar for $ 8. Then his friend have him $ 5. "
        "How much money is left?"
    )


@pytest.mark.parametrize(
    ("body", "question", "expected"),
    [
        ("Robin's hair was 19 inches long. If he grew 18 more inches", "How long is his hair now?",
         "Robin's hair was 19 inches long. If he grew 18 more inches, how long is his hair now?"),
        ("If each bag has 41 cookies and you had 53 bags of cookies",
         "How many cookies would you have?",
         "If each bag has 41 cookies and you had 53 bags of cookies, how many cookies would you "
         "have?"),
        ("Next on his checklist is wax to stick the feathers together. If he has 557 g of wax and "
         "right now he just needs 17 g", "Total how many grams of wax do the feathers require?",
         "Next on his checklist is wax to stick the feathers together. If he has 557 g of wax and "
         "right now he just needs 17 g, total how many grams of wax do the feathers require?"),
        ("A waiter had 12 customers. After some left he still had 14 customers. Then he got 10 "
         "new customers", "How many customers does he have now?",
         "A waiter had 12 customers. After some left he still had 14 customers. Then he got 10 "
         "new customers. How many customers does he have now?"),
        ("Baker made 8 cakes.", "How many cakes?", "Baker made 8 cakes. How many cakes?"),
        ("Is it done?", "How many?", "Is it done? How many?"),
        # An all-caps first word cannot be lower-cased, so the condition gets a full stop.
        ("If the US had 3 states", "US states: how many?",
         "If the US had 3 states. US states: how many?"),
        ("  Extra   spaces. ", " How many? ", "Extra spaces. How many?"),
        ("", "How many?", "How many?"),
    ],
)
def test_join_body_question(body: str, question: str, expected: str) -> None:
    assert join_body_question(body, question) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(51.0, "51"), (1414.0, "1414"), ("7.0", "7"), (2.5, "2.5"), (3, "3")]
)
def test_format_number(value: float | str, expected: str) -> None:
    assert format_number(value) == expected


def test_missing_folder_error_names_path_and_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(data.DATA_DIR_ENV, str(missing))
    for loader in (data.gsm8k, data.svamp):
        with pytest.raises(DataDirError) as info:
            loader()
        message = str(info.value)
        assert str(missing) in message and "not an existing folder" in message
        assert "gsm8k/train.jsonl" in message and "svamp/SVAMP.json" in message


def test_missing_files_are_listed_in_one_error(data_dir: Path) -> None:
    (data_dir / "gsm8k" / "train.jsonl").unlink()
    (data_dir / "gsm8k" / "test.jsonl").unlink()
    with pytest.raises(DataDirError, match="missing .*train.jsonl, .*test.jsonl"):
        data.gsm8k()
    data.svamp()  # the other dataset is still fine


@pytest.mark.parametrize(
    ("relative", "content", "reason"),
    [
        ("svamp/SVAMP.json", "{not json", "Expecting property name"),
        ("svamp/SVAMP.json", '{"ID": "chal-1"}', "top level must be a list"),
        ("svamp/SVAMP.json", '[{"Body": "b", "Question": "q?"}]', "item 0 lacks"),
        ("svamp/SVAMP.json", '[{"Body": "", "Question": "", "Answer": "x"}]', "could not convert"),
        ("gsm8k/test.jsonl", '{"question": "q"}\n', "line 1 lacks"),
        ("gsm8k/train.jsonl", "[1, 2\n", "Expecting"),
        ("gsm8k/train.jsonl", "[1, 2]\n", "line 1: not a JSON object"),
    ],
)
def test_unreadable_file_error_names_file(
    data_dir: Path, relative: str, content: str, reason: str
) -> None:
    path = data_dir / relative
    path.write_text(content, encoding="utf-8")
    loader = data.svamp if relative.startswith("svamp") else data.gsm8k
    with pytest.raises(DataDirError, match=reason) as info:
        loader()
    assert str(path) in str(info.value) and "expected layout" in str(info.value)


def test_svamp_hub_fallback_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset (or empty) variable: SVAMP's two Hub splits, rejoined in upstream order."""
    monkeypatch.setenv(data.DATA_DIR_ENV, "")
    calls: list[tuple[Any, ...]] = []
    # The Hub copy splits the problems 700/300 in shuffled order.
    hub_svamp = datasets.DatasetDict(
        train=datasets.Dataset.from_list([SVAMP_ROWS[3], SVAMP_ROWS[0]]),
        test=datasets.Dataset.from_list([SVAMP_ROWS[2], SVAMP_ROWS[1]]),
    )

    def fake_load_dataset(*args: Any) -> datasets.DatasetDict:
        calls.append(args)
        return hub_svamp

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = data.svamp()["test"].to_list()
    assert calls == [("ChilleD/SVAMP",)]
    assert [r["ID"] for r in rows] == ["chal-1", "chal-8", "chal-18", "chal-36"]
    assert rows[0]["target"] == "51"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_gsm8k_offline_needs_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """The gsm8k*_offline tasks never download: lm-eval's own gsm8k tasks are the Hub version."""
    if value is None:
        monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    else:
        monkeypatch.setenv(data.DATA_DIR_ENV, value)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(DataDirError) as info:
        data.gsm8k()
    assert str(info.value) == (
        "the gsm8k*_offline tasks read local files, but SOFTREASON_DATA_DIR is unset: set it to "
        "a folder holding gsm8k/train.jsonl and gsm8k/test.jsonl (fields question, answer "
        "ending '#### N'), or run lm-eval's own gsm8k tasks, which load openai/gsm8k from the "
        "Hugging Face Hub"
    )


@pytest.mark.skipif(not os.environ.get(data.DATA_DIR_ENV), reason="SOFTREASON_DATA_DIR is unset")
def test_real_data_dir() -> None:
    gsm8k = data.gsm8k()
    assert (gsm8k["train"].num_rows, gsm8k["test"].num_rows) == (7473, 1319)
    assert all("\n#### " in a for a in gsm8k["test"]["answer"])
    svamp = data.svamp()["test"]
    assert svamp.num_rows == 1000
    assert svamp["ID"] == [f"chal-{i}" for i in range(1, 1001)]
    assert all(t.isdigit() for t in svamp["target"])
    assert all(float(t) == a for t, a in zip(svamp["target"], svamp["Answer"], strict=True))
    questions = svamp["question"]
    assert all(". ." not in q and ",," not in q and "  " not in q for q in questions)
    assert sum(q.endswith("?") for q in questions) == 999  # one upstream Question ends in "3"


def test_the_jsonl_reader_skips_only_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}', encoding="utf-8")  # last line complete, no newline
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a": 2', encoding="utf-8")  # a writer killed mid-line
    assert read_jsonl(path) == [{"a": 1}]
    with pytest.raises(JsonlError, match="^line 2: not a JSON record"):
        read_jsonl(path, cut_end=False)
    path.write_text('{"a": 1}\n[1]\n', encoding="utf-8")
    with pytest.raises(JsonlError, match="^line 2: not a JSON object$"):
        read_jsonl(path)
