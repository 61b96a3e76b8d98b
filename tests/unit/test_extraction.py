"""The verifier's answer extraction must agree with lm-eval's own filters, string for string."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from lm_eval_softreason import data

from lm_eval_softreason.scoring import extraction
from lm_eval_softreason.scoring.answers import normalize_answer
from lm_eval_softreason.scoring.extraction import AnswerExtractor, get_answer_extractor, task_config
from lm_eval_softreason.tasks_path import tasks_dir

# Our tasks folder's tasks: svamp and the offline copies of lm-eval's gsm8k tasks (same filters).
TASKS = ["svamp", "svamp_cot", "gsm8k_offline", "gsm8k_cot_offline", "gsm8k_cot_zeroshot_offline",
         "gsm8k_cot_llama_offline", "gsm8k_cot_self_consistency_offline"]
TEXTS = [
    "15 + 27 = 42. The answer is 42.",
    "15 + 27 = 42. The answer is 42",  # gsm8k_cot's regex needs a character after the number
    "She has 16 - 3 - 4 = 9 eggs and makes 9 * 2 = 18 dollars.\n#### 18",
    "The total is $1,000.",
    "The answer is $1,000.",
    "The answer is 1,000.",
    "It drops by 3.50, so the answer is -3.50. The answer is -3.50.",
    "The final answer is 7",
    "First 12, then 30. The answer is 12. Actually the answer is 30.",
    "I am not sure.",
    "",
]


@pytest.fixture(scope="module")
def tasks() -> Iterator[dict[str, Any]]:
    """Our tasks, built by lm-eval itself, on a one-row stand-in dataset (no files needed)."""
    row = {"question": "q", "answer": "#### 1", "Body": "b", "Question": "q?", "Answer": 1.0,
           "target": "1"}
    fake = datasets.DatasetDict(
        train=datasets.Dataset.from_list([row] * 5), test=datasets.Dataset.from_list([row])
    )
    with pytest.MonkeyPatch.context() as mp:
        # `!function lm_eval_softreason.data.<fn>` is looked up when the task is built.
        mp.setattr(data, "gsm8k", lambda **kwargs: fake)
        mp.setattr(data, "svamp", lambda **kwargs: fake)
        manager = TaskManager(include_path=tasks_dir(), include_defaults=False)
        yield manager.load(TASKS)["tasks"]


def lm_eval_filtered(task: Any, text: str) -> dict[str, str]:
    """What lm-eval stores in ``filtered_resps`` for ``text`` (repeated ``repeats`` times)."""
    inst = Instance("generate_until", doc={}, arguments=("", {}), idx=0)
    inst.resps = [text] * (task.config.repeats or 1)
    for ensemble in task._filters:  # what Task.apply_filters runs
        ensemble.apply([inst])
    return inst.filtered_resps


def one_pipeline(task_name: str, pipeline: str) -> AnswerExtractor:
    """An extractor reading only ``pipeline`` of the task's filters."""
    return AnswerExtractor.from_filter_list(task_config(task_name)["filter_list"], [pipeline])


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("name", TASKS)
def test_extractor_equals_lm_eval_filters(tasks: dict[str, Any], name: str, text: str) -> None:
    """Each pipeline alone answers what lm-eval's filter stores; the extractor answers the
    first valid one."""
    extractor = get_answer_extractor(name)
    expected = lm_eval_filtered(tasks[name], text)
    answers = [None if expected[p] == "[invalid]" else expected[p].strip() or None
               for p in extractor.pipelines]
    for pipeline, answer in zip(extractor.pipelines, answers):
        assert one_pipeline(name, pipeline)(text) == answer
    assert extractor(text) == next((a for a in answers if a is not None), None)


def test_gsm8k_cot_reads_a_final_unpunctuated_answer_as_lm_eval_does() -> None:
    text = "15 + 27 = 42. The answer is 42"
    # The offline copy keeps lm-eval's gsm8k_cot regex, quirk included.
    assert get_answer_extractor("gsm8k_cot_offline")(text) == "4"
    assert get_answer_extractor("svamp")(text) == "42"
    assert get_answer_extractor("gsm8k_cot_self_consistency_offline")(text) == "42"


def test_flexible_extract_is_the_fallback() -> None:
    extractor = get_answer_extractor("svamp")
    text = "She pays 76 - 25 = 51 dollars for each pack."
    assert one_pipeline("svamp", "strict-match")(text) is None
    assert one_pipeline("svamp", "flexible-extract")(text) == "51"
    assert extractor(text) == "51"


@pytest.mark.parametrize(
    ("text", "answer"),
    [("The total is $1,000.", "$1,000."), ("The answer is $1,000.", "$1,000."),
     ("The answer is 1,000.", "1,000")],
)
def test_dollar_and_thousands_answers_normalise(text: str, answer: str) -> None:
    got = get_answer_extractor("svamp")(text)
    assert got == answer
    assert normalize_answer(got) == "1000"


def test_no_answer_is_none() -> None:
    assert get_answer_extractor("svamp")("I am not sure.") is None
    assert get_answer_extractor("gsm8k_offline")("") is None


def test_self_consistency_pipelines_work_on_one_response() -> None:
    extractor = get_answer_extractor("gsm8k_cot_self_consistency_offline")
    assert extractor.pipelines == ["score-first", "maj@64", "maj@8"]
    for pipeline in extractor.pipelines:
        assert one_pipeline("gsm8k_cot_self_consistency_offline", pipeline)(
            "The answer is 12.") == "12"


def test_task_metadata_chooses_pipelines() -> None:
    assert get_answer_extractor("svamp").pipelines == ["strict-match", "flexible-extract"]
    assert get_answer_extractor("gsm8k_offline").pipelines == ["strict-match", "flexible-extract"]


def test_metadata_order_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.yaml").write_text(
        "task: flexible_first\noutput_type: generate_until\ndataset_path: none\n"
        "test_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
        "filter_list:\n"
        "  - name: strict-match\n"
        "    filter: [{function: regex, regex_pattern: 'The answer is (\\d+)'}]\n"
        "  - name: flexible-extract\n"
        "    filter: [{function: regex, group_select: -1, regex_pattern: '(\\d+)'},"
        " {function: take_first}]\n"
        "metadata:\n  softreason_answer_filters: [flexible-extract, strict-match]\n",
        encoding="utf-8",
    )
    index = TaskManager(include_path=tmp_path, include_defaults=False).task_index
    monkeypatch.setattr(extraction, "_own_task_index", lambda: index)
    extractor = extraction.get_answer_extractor.__wrapped__("flexible_first")
    assert extractor.pipelines == ["flexible-extract", "strict-match"]
    # strict-match ends without take_first, so its one-item list output is unwrapped.
    assert one_pipeline("flexible_first", "strict-match")("The answer is 12, not 13") == "12"
    assert extractor("The answer is 12, not 13") == "13"


def test_from_filter_list_selects_pipelines() -> None:
    filter_list = [
        {"name": "strict-match", "filter": [
            {"function": "regex", "regex_pattern": r"The answer is (\-?[0-9\.\,]*[0-9]+)"},
            {"function": "take_first"}]},
        {"name": "flexible-extract", "filter": [
            {"function": "regex", "group_select": -1, "regex_pattern": r"(-?[0-9]+)"},
            {"function": "take_first"}]},
    ]
    text = "The answer is 42. Check: 43"
    assert AnswerExtractor.from_filter_list(filter_list)(text) == "42"
    flexible = AnswerExtractor.from_filter_list(filter_list, pipelines=["flexible-extract"])
    assert flexible.pipelines == ["flexible-extract"]
    assert flexible(text) == "43"


def test_custom_fallback_counts_as_invalid() -> None:
    extractor = AnswerExtractor.from_filter_list([
        {"name": "strict", "filter": [
            {"function": "regex", "regex_pattern": r"#### (\d+)", "fallback": "NONE"},
            {"function": "take_first"}]},
    ])
    assert extractor("no answer") is None


def test_no_filter_list_uses_the_stripped_text() -> None:
    extractor = AnswerExtractor.from_filter_list(None)
    assert extractor.pipelines == ["none"]
    assert extractor("  42 apples\n") == "42 apples"
    assert extractor("   ") is None


@pytest.mark.parametrize(
    ("filter_list", "pipelines", "message"),
    [
        (None, ["strict-match"], r"unknown filter pipeline\(s\) \['strict-match'\].*\['none'\]"),
        (None, "none", "must be a list of pipeline names"),
        ([{"filter": []}], None, "bad filter_list entry"),
        ([{"name": "x", "filter": [{"regex_pattern": "a"}]}], None, "step .* has no 'function'"),
        ([{"name": "x", "filter": [{"function": "regex", "bogus": 1}]}], None,
         "pipeline 'x'.*unexpected keyword argument 'bogus'"),
        ([{"name": "x", "filter": [{"function": "no_such_filter"}]}], None,
         "pipeline 'x'.*Unknown filter 'no_such_filter'.*Available: .*regex"),
    ],
)
def test_bad_configuration_errors(filter_list: Any, pipelines: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnswerExtractor.from_filter_list(filter_list, pipelines)


def test_extractor_is_cached_per_task() -> None:
    assert get_answer_extractor("svamp") is get_answer_extractor("svamp")
    assert get_answer_extractor("svamp") is not get_answer_extractor("svamp_cot")


def test_unknown_task_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extraction, "_full_task_index", dict)  # skip the 13 s full index
    with pytest.raises(ValueError, match="unknown task 'no_such_task'"):
        get_answer_extractor("no_such_task")


def test_tag_is_not_a_task() -> None:
    with pytest.raises(ValueError, match="'svamp_tasks' is a tag, not a task"):
        get_answer_extractor("svamp_tasks")


@pytest.mark.slow
def test_stock_task_found_through_the_full_index() -> None:
    """A stock lm-eval task (outside our folder) needs lm-eval's full index (built once, ~13 s)."""
    extractor = get_answer_extractor("gsm8k_platinum_cot")
    assert extractor.pipelines == ["strict-match", "flexible-extract"]
    assert extractor("The answer is 42") == "4"
