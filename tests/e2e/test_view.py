"""``lm-eval-softreason view``: the page's embedded data, what a reader sees in headless
Chromium, and one clear error for input that is not one run."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from lm_eval_softreason.analysis import view
from lm_eval_softreason.scoring.answers import answers_match
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.analysis.artifacts import request_args
from lm_eval_softreason.jsonl import read_jsonl
from tests import browser
from tests.helpers import FAST, ROOT
from tests.harness.test_window import SVAMP_ROWS

LIMIT = 3


def embedded(page: str) -> dict:
    """The JSON a written page embeds (what its script reads)."""
    blob = re.search(r'<script type="application/json" id="view-data">(.*?)</script>', page,
                     re.S).group(1)
    return json.loads(blob)


def run_view(capsys, *argv: str) -> tuple[int, str, str]:
    code = view.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------ a small real run, end to end


def evaluate(model: str, tmp: Path, trace: Path, **model_args: object) -> Path:
    """``LIMIT`` SVAMP questions through lm-eval's ``simple_evaluate`` with a trace, saved as
    the CLI saves ``--output_path`` with ``--log_samples``; returns that folder."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    import lm_eval_softreason.harness.hf_model  # noqa: F401  (registers --model softreason)
    from lm_eval_softreason.tasks_path import tasks_dir

    out = tmp / "out"
    tracker = EvaluationTracker(output_path=str(out))
    results = lm_eval.simple_evaluate(
        model="softreason", model_args={"pretrained": model, "trace_path": str(trace),
                                        **FAST, **model_args},
        tasks=["svamp"], limit=LIMIT, log_samples=True, device="cpu", batch_size=8,
        gen_kwargs="max_gen_toks=12", evaluation_tracker=tracker,
        task_manager=TaskManager(include_path=tasks_dir(), include_defaults=False))
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task, rows in samples.items():
        tracker.save_results_samples(task_name=task, samples=rows)
    return out


@pytest.fixture(scope="module")
def real(tiny_model_dir, tmp_path_factory):
    """The tiny model's softreason run on 3 SVAMP questions, and the trace of the same
    questions under sigma=3 (another run's)."""
    tmp = tmp_path_factory.mktemp("view-run")
    (tmp / "data" / "svamp").mkdir(parents=True)
    (tmp / "data" / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ROWS), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTREASON_DATA_DIR", str(tmp / "data"))
        out = evaluate(tiny_model_dir, tmp, tmp / "trace.jsonl")
        evaluate(tiny_model_dir, tmp / "sigma3", tmp / "sigma3.jsonl", sigma=3)
    (samples,) = out.rglob("samples_svamp_*.jsonl")
    flexible = [r for r in read_jsonl(samples) if r["filter"] == "flexible-extract"]
    trace = {r["prompt_sha"]: r for r in map(json.loads, (tmp / "trace.jsonl").open())}
    return {"dir": tmp, "out": out, "rows": flexible, "trace": trace}


@pytest.mark.slow
def test_the_pages_data_is_the_runs_samples_and_trace(real, capsys):
    """Found through the trace_path the results record: every question with lm-eval's prompt,
    gold, filtered answer and score, and every candidate of its trace record."""
    code, out, _ = run_view(capsys, str(real["out"]))
    assert code == 0
    page = real["out"] / "view.html"
    assert out == f"wrote {page} ({LIMIT} questions, 0.0 MB)\n"
    data = embedded(page.read_text(encoding="utf-8"))
    assert data == json.loads(json.dumps(view.page_data(real["out"])))
    assert (data["kind"], data["strategies"]) == ("results", {"svamp": ["softreason"]})
    rights = [r["exact_match"] > 0 for r in real["rows"]]
    tokens = [r["tokens_generated"] for r in real["trace"].values()]
    assert data["summary"] == [{"task": "svamp", "strategy": "softreason", "questions": LIMIT,
                                "accuracy": sum(rights) / LIMIT,
                                "tokens_per_q": sum(tokens) / LIMIT, "fallbacks": 0}]
    assert [q["doc"] for q in data["questions"]] == list(range(LIMIT))
    for q, row in zip(data["questions"], real["rows"]):
        record = real["trace"][q["sha"]]
        entry = q["by"]["softreason"]
        assert (q["prompt"], q["gold"]) == (request_args(row)[0], row["target"])
        assert (entry["answer"], entry["right"]) == (row["filtered_resps"][0],
                                                     row["exact_match"] > 0)
        assert q["flags"] == {"wrong": not entry["right"], "disagree": False, "fallback": False}
        assert entry["chosen"] == record["chosen"]
        assert entry["cands"] == [[c["round"], c["answer"], c["r_verifier"], c["r_coherence"],
                                   c["reward"], c["tokens"], c["text"],
                                   answers_match(c["answer"], row["target"])]
                                  for c in record["candidates"]]
        assert entry["analyses"] == record["verifier_analyses"]
        rounds = sorted({c["round"] for c in record["candidates"]})
        assert entry["best"] == [max(c["reward"] for c in record["candidates"] if c["round"] == r)
                                 for r in rounds]


@pytest.mark.slow
def test_a_reader_sees_the_run_in_a_browser(real, capsys):
    """What a reader of the page sees in headless Chromium: the question count, a wrong answer
    through the "wrong answers" filter, a candidate's text after a click."""
    why = browser.missing()
    if why:
        if browser.required():
            pytest.fail(f"{why}; {browser.REQUIRE}=1 requires the browser tests to run")
        pytest.skip(why)
    from selenium.webdriver.common.by import By

    page = real["dir"] / "page.html"
    assert view.main([str(real["out"]), "--output", str(page)]) == 0
    wrong = [r for r in real["rows"] if r["exact_match"] == 0]
    assert wrong, "the tiny random model answers every question right?"
    with browser.chromium() as driver:
        driver.get(page.as_uri())
        find = driver.find_element
        assert find(By.ID, "count").text == f"{LIMIT} questions"
        assert [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#summary tbody td")][:3] \
            == ["svamp", "softreason", str(LIMIT)]
        find(By.ID, "f-wrong").click()
        shown = driver.find_elements(By.CSS_SELECTOR, ".question")
        assert find(By.ID, "count").get_attribute("data-shown") == str(len(wrong))
        assert [q.find_element(By.CSS_SELECTOR, ".answer.wrong").text for q in shown] == \
            [f"✗ {r['filtered_resps'][0]}" for r in wrong]
        find(By.ID, "f-fallback").click()  # wrong answers that fell back: none in this run
        assert find(By.ID, "count").text == f"0 of {LIMIT} questions"
        assert driver.find_elements(By.CSS_SELECTOR, ".question") == []
        find(By.ID, "f-fallback").click()
        find(By.ID, "f-wrong").click()

        first = driver.find_elements(By.CSS_SELECTOR, ".question")[0]
        record = real["trace"][real["rows"][0]["prompt_hash"][:16]]
        assert first.find_elements(By.CSS_SELECTOR, "pre.cand-text") == []  # built on a click
        first.find_elements(By.CSS_SELECTOR, "button.show-text")[1].click()
        (text,) = first.find_elements(By.CSS_SELECTOR, "pre.cand-text")
        assert text.get_attribute("textContent") == record["candidates"][1]["text"]


@pytest.mark.slow
@pytest.mark.fault("the trace of a sigma=3 run given with a sigma=1 run's results",
                   "view refuses in one line (exit 2), naming the first record and both "
                   "fingerprints")
def test_a_trace_of_another_run_is_refused(real, capsys):
    other = real["dir"] / "sigma3.jsonl"
    code, out, err = run_view(capsys, str(real["out"]), "--trace", str(other))
    (results,) = real["out"].rglob("results_*.json")
    first = json.loads(other.read_text(encoding="utf-8").splitlines()[0])
    sigma1 = json.loads(results.read_text(encoding="utf-8"))["config"]["softreason"]
    assert (code, out) == (2, "")
    assert err == (
        f"lm-eval-softreason view: error: {other} record 1 (task svamp, prompt_sha "
        f"{first['prompt_sha']}) is not from this run: its settings fingerprint (config) is "
        f"{SoftReasonConfig(**FAST, sigma=3.0).fingerprint()}, but {results}'s "
        f"config.softreason fingerprints to {SoftReasonConfig(**FAST).fingerprint()}\n")
    assert SoftReasonConfig(**FAST).public_dict() == sigma1


# ------------------------------------------------------------------- hand-made compare folders


def sample(doc_id: int, prompt: str, target: str, answer: str, right: bool) -> dict:
    """An lm-eval samples row (flexible-extract) of one question."""
    return {"doc_id": doc_id, "target": target, "arguments": [[prompt, {}]],
            "resps": [[f"... so {answer}."]], "filtered_resps": [answer],
            "filter": "flexible-extract", "metrics": ["exact_match"],
            "prompt_hash": hashlib.sha256(prompt.encode()).hexdigest(),
            "exact_match": float(right)}


def record(prompt: str, answers: list[str], fallback: str | None = None,
           config: SoftReasonConfig = SoftReasonConfig()) -> dict:
    """A trace record whose candidates answer ``answers`` (the first is chosen)."""
    return {"task": "svamp", "strategy": "softreason", "rounds": 1, "fallback": fallback,
            "stop_reason": "converged", "tokens_generated": 10 * len(answers), "chosen": 0,
            "prompt_sha": hashlib.sha256(prompt.encode()).hexdigest()[:16],
            "config": config.fingerprint(), "verifier_answers": [], "verifier_analyses": [],
            "candidates": [{"round": 0, "text": f"so {a}", "answer": a, "tokens": 10,
                            "r_verifier": 0.0, "r_coherence": 0.5, "reward": 0.5}
                           for a in answers]}


def write_cell(folder: Path, strategy: str, samples: list[dict], trace: list[dict],
               config: SoftReasonConfig = SoftReasonConfig(), cut: bool = False) -> None:
    """A finished compare cell: its json (settings, tokens/q), samples and trace."""
    cells = folder / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    stem = cells / f"svamp__{strategy}"
    stem.with_suffix(".json").write_text(json.dumps({
        "schema": 1, "task": "svamp", "strategy": strategy, "tokens_generated_per_q": 12.5,
        "lm_eval_config": {"softreason": config.public_dict()}}), encoding="utf-8")
    Path(f"{stem}.samples.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in samples), encoding="utf-8")
    lines = "".join(json.dumps(r) + "\n" for r in trace)
    Path(f"{stem}.trace.jsonl").write_text(lines[:-20] if cut else lines, encoding="utf-8")


PROMPTS = ["Q: 3 + 4?</script><script>alert(1)</script>", "Q: 12 + 5?", "Q: 7 + 7?"]


def test_strategies_side_by_side_and_what_each_filter_picks(tmp_path, capsys):
    greedy = [sample(0, PROMPTS[0], "7", "7", True), sample(1, PROMPTS[1], "17", "17", True),
              sample(2, PROMPTS[2], "14", "13", False)]
    sr = [sample(0, PROMPTS[0], "7", "7.0", True), sample(1, PROMPTS[1], "17", "16", False),
          sample(2, PROMPTS[2], "14", "13", False)]
    write_cell(tmp_path, "greedy", greedy, [])
    write_cell(tmp_path, "softreason", sr, [
        record(PROMPTS[0], ["7.0", "8"]), record(PROMPTS[1], ["16"], fallback="GP failed"),
        record(PROMPTS[2], ["13", "14"])])
    code, out, _ = run_view(capsys, str(tmp_path), "-o", str(tmp_path / "page.html"))
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'page.html'} (3 questions, ")
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2  # the prompt's own cannot close the data tag
    data = embedded(page)
    assert data["strategies"] == {"svamp": ["greedy", "softreason"]}
    assert [(s["strategy"], s["questions"], s["accuracy"], s["fallbacks"])
            for s in data["summary"]] == [("greedy", 3, 2 / 3, 0), ("softreason", 3, 1 / 3, 1)]
    assert [q["prompt"] for q in data["questions"]] == PROMPTS
    # 7 and 7.0 agree; 17 vs 16 and a fallback; both say 13 (wrong)
    assert [q["flags"] for q in data["questions"]] == [
        {"wrong": False, "disagree": False, "fallback": False},
        {"wrong": True, "disagree": True, "fallback": True},
        {"wrong": True, "disagree": False, "fallback": False}]
    by = data["questions"][2]["by"]
    assert by["greedy"] == {"response": "... so 13.", "answer": "13", "right": False}
    assert by["softreason"]["cands"] == [[0, "13", 0.0, 0.5, 0.5, 10, "so 13", False],
                                         [0, "14", 0.0, 0.5, 0.5, 10, "so 14", True]]


def test_a_committed_folder_is_read_from_its_digests():
    folder = ROOT / "docs/results/report/qwen1.5b-svamp"
    data = view.page_data(folder)
    assert [(s["strategy"], s["questions"], s["accuracy"]) for s in data["summary"]] == [
        ("greedy", 100, 0.77), ("sc", 100, 0.84), ("softreason", 100, 0.79),
        ("softreason_tuned", 100, 0.78)]
    first = data["questions"][0]["by"]["softreason"]
    assert (first["answer"], first["right"], len(first["cands"])) == (None, True, 8)
    assert first["cands"][0] == [None, "6.5", None, None, None, 10, None, False]


@pytest.mark.fault("a trace's last line cut mid-write", "view drops it as the trace reader "
                   "does: that question shows its sample without candidates")
def test_a_cut_last_line_of_a_trace_is_dropped(tmp_path, capsys):
    rows = [sample(i, p, "1", "1", True) for i, p in enumerate(PROMPTS)]
    write_cell(tmp_path, "softreason", rows, [record(p, ["1"]) for p in PROMPTS], cut=True)
    assert run_view(capsys, str(tmp_path))[0] == 0
    data = embedded((tmp_path / "view.html").read_text(encoding="utf-8"))
    assert [("cands" in q["by"]["softreason"]) for q in data["questions"]] == [True, True, False]


@pytest.mark.fault("a compare cell whose trace was written under other settings",
                   "view refuses in one line (exit 2), naming the first record")
def test_a_cells_trace_under_other_settings_is_refused(tmp_path, capsys):
    rows = [sample(i, p, "1", "1", True) for i, p in enumerate(PROMPTS)]
    other = SoftReasonConfig(sigma=3.0)
    write_cell(tmp_path, "softreason", rows, [record(p, ["1"], config=other) for p in PROMPTS])
    code, out, err = run_view(capsys, str(tmp_path))
    trace = tmp_path / "cells" / "svamp__softreason.trace.jsonl"
    sha = hashlib.sha256(PROMPTS[0].encode()).hexdigest()[:16]
    assert (code, out) == (2, "")
    assert err == (
        f"lm-eval-softreason view: error: {trace} record 1 (task svamp, prompt_sha {sha}) is "
        f"not from this run: its settings fingerprint (config) is {other.fingerprint()}, but "
        f"{tmp_path / 'cells' / 'svamp__softreason.json'}'s config.softreason fingerprints to "
        f"{SoftReasonConfig().fingerprint()}\n")
    assert not (tmp_path / "view.html").exists()


@pytest.mark.fault("a folder with no results in it", "view says so in one line (exit 2)")
def test_a_folder_without_results_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("nothing here", encoding="utf-8")
    assert run_view(capsys, str(tmp_path)) == (2, "", (
        f"lm-eval-softreason view: error: {tmp_path}: no results here: neither "
        f"results_*.json (an lm-eval --output_path folder) nor cells/*.json (a compare "
        f"folder)\n"))
    assert run_view(capsys, str(tmp_path / "absent")) == (
        2, "", f"lm-eval-softreason view: error: {tmp_path / 'absent'}: no such file or folder\n")


def test_a_trace_alone_shows_its_candidates_unscored(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(record(p, ["1", "2"])) + "\n" for p in PROMPTS),
                     encoding="utf-8")
    assert run_view(capsys, str(trace))[0] == 0
    data = embedded((tmp_path / "t.html").read_text(encoding="utf-8"))
    assert (data["kind"], len(data["questions"])) == ("trace", 3)
    assert data["summary"] == [{"task": "svamp", "strategy": "softreason", "questions": 3,
                                "accuracy": None, "tokens_per_q": 20.0, "fallbacks": 0}]
    entry = data["questions"][0]["by"]["softreason"]
    assert (entry["answer"], entry["right"], entry["cands"][1][1:]) == (
        "1", None, ["2", 0.0, 0.5, 0.5, 10, "so 2", None])
    trace.write_text("not json\n", encoding="utf-8")
    code, _, err = run_view(capsys, str(trace))
    assert code == 2 and err.startswith(f"lm-eval-softreason view: error: {trace}: not a "
                                        f"softreason trace (") and err.count("\n") == 1
