"""Our task YAMLs: SVAMP prompts/targets/scoring, and offline GSM8K variants that match lm-eval's
under names of their own."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lm_eval
import pytest
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from lm_eval_softreason import data
from lm_eval_softreason.tasks_path import tasks_dir
from tests.helpers import ROOT

BENCH_COMMON = ROOT / "benchmarks" / "_common.py"
STOCK_GSM8K = Path(lm_eval.__file__).parent / "tasks" / "gsm8k"
OURS_GSM8K = Path(tasks_dir()) / "gsm8k_offline"
# What an offline variant may change: where the data comes from, its name, its tag.
OWN_KEYS = ("dataset_path", "dataset_name", "custom_dataset", "task", "tag")
OFFLINE_TAG = "softreason_offline"
SVAMP_ROWS = [
    {"ID": "chal-1", "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 "
     "dollars on each pack", "Question": "How much do you have to pay to buy each pack?",
     "Equation": "( 76.0 - 25.0 )", "Answer": 51.0, "Type": "Subtraction"},
    {"ID": "chal-18", "Body": "In a school there are 732 girls and 761 boys. 682 more girls and 8 "
     "more boys joined the school.", "Question": "How many girls are there in the school now?",
     "Equation": "( 732.0 + 682.0 )", "Answer": 1414.0, "Type": "Addition"},
]
GSM8K_TEST = [{"question": "Ann had $1,200 and spent $200. How much is left?",
               "answer": "1200 - 200 = <<1200-200=1000>>1000\n#### 1000"}]
GSM8K_TRAIN = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
               for i in range(5)]
STOCK_GSM8K_TASKS = ["gsm8k", "gsm8k_cot", "gsm8k_cot_zeroshot", "gsm8k_cot_self_consistency",
                     "gsm8k_cot_llama"]
OFFLINE = [f"{name}_offline" for name in STOCK_GSM8K_TASKS]
TUNING = "gsm8k_cot_zeroshot_train_offline"
TASKS = ["svamp", "svamp_cot", *OFFLINE, TUNING]


@pytest.fixture(scope="module")
def data_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SOFTREASON_DATA_DIR holding a few rows of each dataset, set for this module."""
    root = tmp_path_factory.mktemp("data")
    (root / "svamp").mkdir()
    (root / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ROWS), encoding="utf-8")
    (root / "gsm8k").mkdir()
    for split, rows in (("train", GSM8K_TRAIN), ("test", GSM8K_TEST)):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (root / "gsm8k" / f"{split}.jsonl").write_text(text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(data.DATA_DIR_ENV, str(root))
        yield root


@pytest.fixture(scope="module")
def manager() -> TaskManager:
    return TaskManager(include_path=tasks_dir(), include_defaults=False)


@pytest.fixture(scope="module")
def tasks(manager: TaskManager, data_env: Path) -> dict[str, Any]:
    return manager.load(TASKS)["tasks"]


def filtered(task: Any, text: str) -> dict[str, str]:
    """Run lm-eval's own filter pipelines of ``task`` on one generation (repeated as needed)."""
    inst = Instance("generate_until", doc={}, arguments=("", {}), idx=0)
    inst.resps = [text] * (task.config.repeats or 1)
    for ensemble in task._filters:  # what Task.apply_filters runs
        ensemble.apply([inst])
    return inst.filtered_resps


def test_index_lists_our_tasks(manager: TaskManager) -> None:
    assert set(manager.all_subtasks) == set(TASKS)
    assert set(manager.all_tags) == {"svamp_tasks", OFFLINE_TAG, "softreason_tuning"}
    assert manager.all_groups == []
    assert manager.task_index["svamp_tasks"].tags == {"svamp", "svamp_cot"}
    assert manager.task_index[OFFLINE_TAG].tags == set(OFFLINE)
    assert manager.task_index["softreason_tuning"].tags == {TUNING}


def test_svamp_docs_prompts_targets(tasks: dict[str, Any]) -> None:
    task = tasks["svamp"]
    docs = list(task.test_docs())
    assert [d["ID"] for d in docs] == ["chal-1", "chal-18"]
    assert task.doc_to_text(docs[0]) == (
        "Q: Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each "
        "pack, how much do you have to pay to buy each pack?\nEnd your response with \"The "
        "answer is N.\", where N is the final answer as a number.\nA: Let's think step by step."
    )
    assert [task.doc_to_target(d) for d in docs] == ["51", "1414"]
    assert task.config.num_fewshot == 0
    until = ["Q:", "</s>", "<|im_end|>"]
    assert task.config.generation_kwargs == {"until": until, "do_sample": False}


def test_benchmark_prompts_are_the_tasks_prompts(tasks: dict[str, Any]) -> None:
    """benchmarks/ time our tasks' own prompts (they build them without lm-eval)."""
    spec = importlib.util.spec_from_file_location("bench_common", BENCH_COMMON)
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    assert set(common.PROMPTS) == set(common.TASKS)
    for dataset, name in common.TASKS.items():
        task = tasks[name]
        doc = next(iter(task.test_docs()))
        assert common.PROMPTS[dataset].format(question=doc["question"]) == task.doc_to_text(doc)
    assert common.PROMPT == common.PROMPTS["svamp"]


def test_svamp_prompt_asks_for_what_strict_match_reads(tasks: dict[str, Any]) -> None:
    """A generation that ends exactly as the prompt asks is scored right by strict-match."""
    task = tasks["svamp"]
    doc = next(iter(task.test_docs()))
    (form,) = re.findall(r'"([^"]*N[^"]*)"', task.doc_to_text(doc))
    text = "76 - 25 = 51 dollars per pack. " + form.replace("N", doc["target"])
    assert filtered(task, text)["strict-match"] == "51"
    assert task.process_results(doc, [filtered(task, text)["strict-match"]]) == {
        "exact_match": 1.0}


def test_svamp_cot_prompt_uses_gsm8k_cot_exemplars(tasks: dict[str, Any]) -> None:
    task = tasks["svamp_cot"]
    samples = load_yaml(STOCK_GSM8K / "gsm8k-cot.yaml")["fewshot_config"]["samples"]
    assert task.config.fewshot_config.samples == samples
    task.build_all_requests(limit=1, rank=0, world_size=1)
    prompt = task.instances[0].args[0]
    shots = "".join(f"Q: {s['question']}\nA: {s['target']}\n\n" for s in samples)
    question = task.doc_to_text(next(iter(task.test_docs())))
    assert prompt == shots + question
    assert question.startswith("Q: Each pack of dvds") and question.endswith("?\nA:")
    assert all(re.search(r"The answer is \d+\.$", s["target"]) for s in samples)


def test_svamp_variants_share_scoring(tasks: dict[str, Any]) -> None:
    zero, cot = tasks["svamp"].config, tasks["svamp_cot"].config
    assert zero.filter_list == cot.filter_list
    assert zero.metric_list == cot.metric_list
    assert zero.generation_kwargs == cot.generation_kwargs
    assert [f["name"] for f in zero.filter_list] == ["strict-match", "flexible-extract"]
    assert zero.metadata["softreason_answer_filters"] == ["strict-match", "flexible-extract"]
    assert cot.metadata["softreason_answer_filters"] == zero.metadata["softreason_answer_filters"]
    # svamp 2.0 changed svamp's prompt only, so svamp_cot keeps 1.0 (the gate compares versions).
    assert (zero.metadata["version"], cot.metadata["version"]) == (2.0, 1.0)


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("76 - 25 = 51. The answer is 51.", "51", "51."),
        ("76 - 25 = 51. The answer is 51", "51", "51"),  # gsm8k_cot's regex would give "5"
        ("She pays 51 dollars.", "[invalid]", "51"),
        ("The answer is $1,000.", "[invalid]", "$1,000."),
        ("The answer is 1,000.", "1,000", "1,000."),
    ],
)
def test_svamp_filters(tasks: dict[str, Any], text: str, strict: str, flexible: str) -> None:
    assert filtered(tasks["svamp"], text) == {"strict-match": strict, "flexible-extract": flexible}


@pytest.mark.parametrize(
    ("prediction", "score"),
    [("51", 1.0), ("51.0", 1.0), ("51.00", 1.0), ("51.", 1.0), ("$51", 1.0), ("$51.00.", 1.0),
     ("510", 0.0), ("5.1", 0.0), ("51.5", 0.0), ("-51", 0.0), ("[invalid]", 0.0)],
)
def test_svamp_exact_match_normalises_numbers(
    tasks: dict[str, Any], prediction: str, score: float
) -> None:
    task = tasks["svamp"]
    doc = next(iter(task.test_docs()))  # target "51"
    assert task.process_results(doc, [prediction]) == {"exact_match": score}


@pytest.mark.parametrize(("prediction", "score"), [("1,414", 1.0), ("1414.0", 1.0), ("141", 0.0)])
def test_svamp_exact_match_thousands(tasks: dict[str, Any], prediction: str, score: float) -> None:
    task = tasks["svamp_cot"]
    doc = list(task.test_docs())[1]  # target "1414"
    assert task.process_results(doc, [prediction]) == {"exact_match": score}


def test_svamp_scores_generations_end_to_end(tasks: dict[str, Any]) -> None:
    """Generation -> the task's filters -> its metric, for both pipelines."""
    task = tasks["svamp"]
    doc = next(iter(task.test_docs()))
    text = "76 - 25 = 51.00 dollars per pack. The answer is 51.00"
    scores = {name: task.process_results(doc, [out]) for name, out in filtered(task, text).items()}
    assert scores == {name: {"exact_match": 1.0} for name in ("strict-match", "flexible-extract")}


class CannedLM(LM):
    """Answers every request with the same text, so a full evaluation runs without a model."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        return [self.text for _ in requests]

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list:
        raise NotImplementedError

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list:
        raise NotImplementedError


def test_simple_evaluate_runs_svamp_offline(manager: TaskManager, data_env: Path) -> None:
    results = lm_eval.simple_evaluate(
        model=CannedLM("76 - 25 = 51. The answer is 51.0."), tasks=["svamp"], task_manager=manager,
        bootstrap_iters=0, log_samples=False,
    )
    svamp = results["results"]["svamp"]
    assert svamp["exact_match,strict-match"] == 0.5  # 51 right, 1414 wrong
    assert svamp["exact_match,flexible-extract"] == 0.5


def test_gsm8k_offline_variants_read_local_data(tasks: dict[str, Any]) -> None:
    for name in OFFLINE:
        task = tasks[name]
        assert [d["question"] for d in task.test_docs()] == [GSM8K_TEST[0]["question"]], name
    question = GSM8K_TEST[0]["question"]
    assert tasks["gsm8k_offline"].doc_to_text(GSM8K_TEST[0]) == f"Question: {question}\nAnswer:"
    assert tasks["gsm8k_cot_offline"].doc_to_target(GSM8K_TEST[0]) == "1000"
    assert tasks["gsm8k_cot_self_consistency_offline"].config.repeats == 64


def test_gsm8k_tuning_task_is_zeroshot_on_the_train_split(manager: TaskManager,
                                                          data_env: Path) -> None:
    train = manager.load([TUNING])["tasks"][TUNING]
    test = manager.load(["gsm8k_cot_zeroshot_offline"])["tasks"]["gsm8k_cot_zeroshot_offline"]
    assert [d["question"] for d in train.eval_docs] == [r["question"] for r in GSM8K_TRAIN]
    mine, theirs = train.config.to_dict(), test.config.to_dict()
    assert [mine.pop(k) for k in ("task", "test_split")] == [TUNING, "train"]
    del theirs["task"], theirs["test_split"]
    for config in (mine, theirs):
        del config["metadata"]["config_source"]
    assert mine == theirs  # prompt, filters, metrics, generation settings: the same


@pytest.mark.parametrize("name", sorted(p.name for p in OURS_GSM8K.glob("*.yaml")))
def test_gsm8k_offline_variant_matches_stock(name: str) -> None:
    """Everything but data, name and tag equals lm-eval's file, so an upgrade's changes show up."""
    stock = load_yaml(STOCK_GSM8K / name, resolve_func=False)
    ours = load_yaml(OURS_GSM8K / name, resolve_func=False)
    assert (stock.get("dataset_path"), stock.get("dataset_name")) == ("openai/gsm8k", "main")
    # Unresolved, a !function reference reads as "<yaml folder>/<module.function>".
    assert ours["custom_dataset"].endswith("/lm_eval_softreason.data.gsm8k")
    assert ours["task"] == f"{stock['task']}_offline"
    assert ours["tag"] == [OFFLINE_TAG]
    assert {k: v for k, v in ours.items() if k not in OWN_KEYS} == {
        k: v for k, v in stock.items() if k not in OWN_KEYS
    }
    resolved = load_yaml(OURS_GSM8K / name, resolve_func=True)
    assert resolved["custom_dataset"] is data.gsm8k  # includes resolve next to our file


def test_every_stock_gsm8k_task_has_an_offline_variant() -> None:
    stock = {p.name for p in STOCK_GSM8K.glob("*.yaml")}
    assert stock == {p.name for p in OURS_GSM8K.glob("*.yaml")}
    names = {load_yaml(STOCK_GSM8K / n, resolve_func=False)["task"] for n in stock}
    assert names == set(STOCK_GSM8K_TASKS)


@pytest.mark.slow
def test_our_tasks_only_add_names(caplog: pytest.LogCaptureFixture) -> None:
    """Indexed with lm-eval's own tasks, ours change no stock task, tag or group: every name of
    ours is new, nothing "overrides existing task", and stock gsm8k stays lm-eval's file."""
    stock = TaskManager()
    with caplog.at_level(logging.WARNING):
        both = TaskManager(include_path=tasks_dir())
    mine = TaskManager(include_path=tasks_dir(), include_defaults=False)
    assert not set(mine.task_index) & set(stock.task_index)
    assert set(both.task_index) == set(stock.task_index) | set(mine.task_index)
    assert [r.getMessage() for r in caplog.records if "overrides" in r.getMessage()] == []
    assert {name: both.task_index[name] for name in stock.task_index} == stock.task_index
    assert both.task_index["gsm8k"].yaml_path == STOCK_GSM8K / "gsm8k.yaml"
    assert both.task_index["gsm8k_offline"].yaml_path == OURS_GSM8K / "gsm8k.yaml"
