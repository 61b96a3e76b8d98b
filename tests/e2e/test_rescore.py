"""``rescore``: a finished run's answers re-selected under another rule and re-scored with the
task's own filters and metrics; ``best`` on a ``select=best`` run gives its samples back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lm_eval_softreason.analysis import artifacts, curves, rescore
from lm_eval_softreason.jsonl import read_jsonl
from lm_eval_softreason.analysis.compare import run as compare_run
from lm_eval_softreason.cli import main as cli_main
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.settings import prompt_sha
from lm_eval_softreason.trace import read_trace
from tests.helpers import FAST, ROOT
from tests.harness.test_window import SVAMP_ROWS


# One question's candidates: the best objective says 8, two lower ones say 7 (gold).
WRONG = "3 + 4 = 8. The answer is 8."
RIGHT = "3 + 4 = 7. The answer is 7."
RIGHT_TOO = "So 7 apples. The answer is 7."


def record(candidates: list[tuple[str, str | None, float, float, float]],
           verifier_answers: list[str | None] = (), **extra) -> dict:
    """A trace record from (text, answer, reward, r_verifier, r_coherence) per candidate."""
    return {"task": "svamp", "fallback": None, "chosen": 0, "prompt_sha": "0" * 16,
            "verifier_answers": list(verifier_answers),
            "candidates": [{"round": 0, "text": t, "answer": a, "tokens": 12, "reward": rw,
                            "r_verifier": rv, "r_coherence": rc, "confidence": None}
                           for t, a, rw, rv, rc in candidates], **extra}


HAND = record([(WRONG, "8", 0.9, 1.0, 0.2), (RIGHT, "7", 0.5, 0.0, 0.6),
               (RIGHT_TOO, "7", 0.4, 0.0, 0.5)], verifier_answers=["8", "8"])


@pytest.mark.parametrize("rule, expected", [
    ("best", WRONG),                       # reward 0.9
    ("vote", WRONG),                       # 8: 1 candidate + 2 verifier answers; 7: 2
    ("vote_candidates", RIGHT),            # 7: 2 candidates; the better objective of the two
    ("vote_verifier_weighted", WRONG),     # 8: 1.0; 7: 0.0 + 0.0
    ("vote_coherence_weighted", RIGHT),    # 8: 0.2; 7: 0.6 + 0.5
])
def test_each_rule_on_a_hand_made_record(rule, expected):
    assert rescore.choose(rescore.load_rule(rule), HAND) == expected


def test_weighted_vote_ties_go_to_more_holders_then_to_the_first_answer_seen():
    # 5: 1.0 from one candidate; 6: 0.5 + 0.5 from two -> 6, its better objective
    more = record([("five", "5", 0.9, 1.0, 0.0), ("six a", "6", 0.1, 0.5, 0.0),
                   ("six b", "6", 0.2, 0.5, 0.0)])
    assert rescore.RULES["vote_verifier_weighted"](more) == "six b"
    # equal weight and holders: 6 is seen first though 5 has the better objective
    first = record([("six", "6", 0.1, 0.0, 0.3), ("five", "5", 0.9, 0.0, 0.3)])
    assert rescore.RULES["vote_coherence_weighted"](first) == "six"
    # unparsed answers never vote (even with the largest weight); none parsed: best
    unparsed = record([("none", None, 0.1, 1.0, 0.9), ("five", "5", 0.0, 0.0, 0.1)])
    assert rescore.RULES["vote_coherence_weighted"](unparsed) == "five"
    nothing = record([("a", None, 0.1, 1.0, 0.9), ("b", None, 0.7, 0.0, 0.1)])
    assert rescore.RULES["vote_verifier_weighted"](nothing) == "b"


def test_vote_ties_go_to_the_first_answer_seen():
    five_six = [("five", "5", 0.1, 0.0, 0.0), ("six", "6", 0.9, 0.0, 0.0)]
    # votes 5, 6, 6, 5: a tie, 5 seen first, though six has the better objective
    assert rescore.RULES["vote"](record(five_six, verifier_answers=["6", "5"])) == "five"
    assert rescore.RULES["vote"](record(five_six, verifier_answers=["5"])) == "five"
    assert rescore.RULES["vote_candidates"](record(five_six, verifier_answers=["5"])) == "five"
    # a winner that only the verifier holds: best
    assert rescore.RULES["vote"](record(five_six, verifier_answers=["9", "9"])) == "six"


def plugin_rule(record: dict) -> str:
    """A plug-in rule for the tests: the last candidate."""
    return record["candidates"][-1]["text"]


def not_a_candidate(record: dict) -> str:
    return record["candidates"][0]["text"] + " and more"


def two_args(record: dict, other: dict) -> str:
    return ""


def test_a_rule_by_import_path():
    rule = rescore.load_rule("tests.e2e.test_rescore:plugin_rule")
    assert rescore.choose(rule, HAND) == RIGHT_TOO


def test_a_rule_must_return_a_candidates_full_text():
    with pytest.raises(rescore.RescoreError, match="no candidate's full text"):
        rescore.choose(rescore.load_rule("tests.e2e.test_rescore:not_a_candidate"), HAND)


@pytest.mark.parametrize("spec, message", [
    ("majority", "not a built-in rule (best, vote, vote_candidates, vote_verifier_weighted, "
                 "vote_coherence_weighted) and not an import path 'package.module:function'"),
    ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz' (No module named "
                              "'no_such_module_xyz')"),
    ("tests.e2e.test_rescore:no_such_rule", "'tests.e2e.test_rescore' has no 'no_such_rule'"),
    ("tests.e2e.test_rescore:WRONG", "'WRONG' is not callable"),
    ("tests.e2e.test_rescore:two_args", "it takes (record, other), so it cannot be called as "
                                    "fn(record: dict) -> str"),
])
def test_a_bad_rule_is_one_clear_error(spec, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        rescore.main(["--trace", str(tmp_path / "t.jsonl"), "--samples", "s", "--select", spec])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"lm-eval-softreason rescore: error: --select {spec!r}: {message}")


def test_rescore_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["rescore", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lm-eval-softreason rescore ")
    assert "--select" in out and "--trace" in out and "--results" in out


def test_both_logged_forms_of_a_samples_arguments():
    kwargs = {"until": ["Q:"], "max_gen_toks": 12}
    assert artifacts.request_args({"arguments": [["the prompt", kwargs]]}) == ("the prompt", kwargs)
    cli_form = {"gen_args_0": {"arg_0": "the prompt", "arg_1": kwargs}}
    assert artifacts.request_args({"arguments": cli_form}) == ("the prompt", kwargs)


# ------------------------------------------------------------------- a real run, end to end


def cli_run(model: str, tmp: Path, **model_args: object) -> dict:
    """6 SVAMP questions through the CLI with a trace and lm-eval's logged samples."""
    (tmp / "data" / "svamp").mkdir(parents=True)
    (tmp / "data" / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ROWS), encoding="utf-8")
    args = ",".join(f"{k}={v}" for k, v in {"pretrained": model,
                                            "trace_path": tmp / "trace.jsonl",
                                            **model_args}.items())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTREASON_DATA_DIR", str(tmp / "data"))
        done = subprocess.run(
            [sys.executable, "-m", "lm_eval_softreason", "--model", "softreason",
             "--model_args", args, "--device", "cpu", "--batch_size", "8", "--tasks", "svamp",
             "--limit", str(len(SVAMP_ROWS)), "--gen_kwargs", "max_gen_toks=12",
             "--output_path", str(tmp / "out"), "--log_samples"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (samples,) = rescore.samples_in(tmp / "out")
    return {"dir": tmp, "samples": samples, "rows": read_jsonl(samples),
            "trace": rescore.index_trace(read_trace(tmp / "trace.jsonl"))}


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """A softreason run (select=best)."""
    result = cli_run(tiny_model_dir, tmp_path_factory.mktemp("rescore-run"), **FAST)
    with pytest.MonkeyPatch.context() as mp:  # the task's data, for load_task
        mp.setenv("SOFTREASON_DATA_DIR", str(result["dir"] / "data"))
        yield result


def test_best_reproduces_the_runs_own_samples_exactly(run):
    trace, rows = run["trace"], run["rows"]
    assert len(trace) == len(SVAMP_ROWS) and len(rows) == 2 * len(SVAMP_ROWS)  # two filters
    # best is not simply the first candidate here, so the test does check the choice
    assert any(r["chosen"] != 0 for r in trace.values())
    result = rescore.rescore_task("svamp", rows, trace, rescore.RULES["best"])
    assert result.questions == len(SVAMP_ROWS) and result.kept == 0
    assert result.texts_changed == 0
    keys = ("doc_id", "filter", "resps", "filtered_resps", "exact_match")
    assert [{k: r[k] for k in keys} for r in result.rescored] == \
        [{k: r[k] for k in keys} for r in rows]
    # another rule does change answers on the same run
    vote = rescore.RULES["vote_coherence_weighted"]
    other = rescore.rescore_task("svamp", rows, trace, vote)
    changed = sum(vote(r) != r["candidates"][r["chosen"]]["text"] for r in trace.values())
    assert other.texts_changed == changed > 0


@pytest.mark.slow
def test_a_run_with_a_weighted_vote_is_reproduced_by_the_same_rule(tiny_model_dir, run,
                                                                    tmp_path):
    """The live model_arg ``select`` and rescore share their rules, and ``select`` does not
    seed the search: a ``select=vote_coherence_weighted`` run searches ``run``'s candidates
    (``select=best``) and returns what rescoring ``run`` with that rule returns."""
    voted = cli_run(tiny_model_dir, tmp_path, **FAST, select="vote_coherence_weighted")
    trace, rows = voted["trace"], voted["rows"]
    texts = {sha: [c["text"] for c in r["candidates"]] for sha, r in trace.items()}
    assert texts == {sha: [c["text"] for c in r["candidates"]] for sha, r in run["trace"].items()}
    same = rescore.rescore_task("svamp", rows, trace, rescore.RULES["vote_coherence_weighted"])
    assert (same.questions, same.kept, same.texts_changed) == (len(SVAMP_ROWS), 0, 0)
    vote = rescore.RULES["vote_coherence_weighted"]
    from_best = rescore.rescore_task("svamp", run["rows"], run["trace"], vote)
    changed = sum(vote(r) != r["candidates"][r["chosen"]]["text"] for r in run["trace"].values())
    assert from_best.texts_changed == changed > 0
    keys = ("doc_id", "filter", "resps", "filtered_resps", "exact_match")
    assert [{k: r[k] for k in keys} for r in rows] == \
        [{k: r[k] for k in keys} for r in from_best.rescored]


def test_cli_prints_and_writes_original_and_rescored(run, capsys, monkeypatch):
    monkeypatch.setenv("SOFTREASON_DATA_DIR", str(run["dir"] / "data"))
    out = run["dir"] / "best.json"
    assert rescore.main(["--trace", str(run["dir"] / "trace.jsonl"), "--results",
                         str(run["dir"] / "out"), "--select", "best", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| task  | filter           | metric      | n |" in printed
    assert "svamp: returned text changed on 0 of 6 questions; 0 kept the run's response" \
        in printed
    got = json.loads(out.read_text())
    metrics = got["tasks"]["svamp"]["metrics"]
    assert set(metrics) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    results = json.loads(next((run["dir"] / "out").rglob("results_*.json")).read_text())
    for key, m in metrics.items():
        assert m["rescored"] == m["original"] == results["results"]["svamp"][key]
        assert m["changed"] == 0 and m["n"] == len(SVAMP_ROWS)


@pytest.mark.fault("the trace of a sigma=3 run given with a sigma=1 run's results",
                   "rescore refuses (exit 2), naming the first record and both fingerprints")
def test_a_trace_of_another_run_is_refused(run, configure, capsys, tmp_path):
    """The run's questions searched again under sigma=3: the same prompts, so they join, but
    another run's candidates. rescore used to re-select from them as the run's own."""
    from lm_eval.api.instance import Instance

    other = tmp_path / "sigma3.jsonl"
    lm = configure(sigma=3.0, trace_path=str(other))
    lm.generate_until([Instance("generate_until", r["doc"], artifacts.request_args(r), idx=0,
                                metadata=("svamp", r["doc_id"], 1))
                       for r in run["rows"] if r["filter"] == "flexible-extract"])
    (results,) = (run["dir"] / "out").rglob("results_*.json")
    first = read_trace(other)[0]
    with pytest.raises(SystemExit) as exit_:
        rescore.main(["--trace", str(other), "--results", str(run["dir"] / "out"),
                      "--select", "best"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"lm-eval-softreason rescore: error: {other} record 1 (task svamp, prompt_sha "
        f"{first['prompt_sha']}) is not from this run: its settings fingerprint (config) is "
        f"{SoftReasonConfig(**FAST, sigma=3.0).fingerprint()}, but {results}'s "
        f"config.softreason fingerprints to {SoftReasonConfig(**FAST).fingerprint()}")


def test_vote_rescores_a_hand_made_trace_where_it_differs(run):
    """Question 0 (gold 7) gets HAND's candidates: best returns 8, vote_candidates 7; the
    task's own filters and exact_match score each."""
    rows = [r for r in run["rows"] if r["doc_id"] == 0]
    assert rows[0]["target"] == "7"
    sha = prompt_sha(artifacts.request_args(rows[0])[0])
    trace = {sha: {**HAND, "prompt_sha": sha}}
    task = rescore.load_task("svamp")
    scores = {}
    for rule in ("best", "vote_candidates"):
        result = rescore.rescore_task("svamp", rows, trace, rescore.RULES[rule], task)
        scores[rule] = {r["filter"]: (r["filtered_resps"], r["exact_match"])
                        for r in result.rescored}
    assert scores == {
        "best": {"strict-match": (["8"], 0.0), "flexible-extract": (["8."], 0.0)},
        "vote_candidates": {"strict-match": (["7"], 1.0), "flexible-extract": (["7."], 1.0)},
    }


def test_fallbacks_and_questions_without_a_record_keep_the_runs_response(run):
    rows = [r for r in run["rows"] if r["doc_id"] in (0, 1)]
    sha = prompt_sha(artifacts.request_args(rows[0])[0])
    trace = {sha: {**HAND, "prompt_sha": sha, "fallback": "search failed"}}
    result = rescore.rescore_task("svamp", rows, trace, rescore.RULES["vote_candidates"],
                                  rescore.load_task("svamp"))
    assert (result.kept, result.texts_changed) == (2, 0)
    assert [r["resps"] for r in result.rescored] == [r["resps"] for r in rows]


def test_more_than_one_response_per_question_is_refused(run):
    rows = [{**r, "resps": [r["resps"][0] * 2]} for r in run["rows"] if r["doc_id"] == 0]
    with pytest.raises(rescore.RescoreError, match="document 0 has 2 responses; rescore "
                                                   "handles tasks with one response per "
                                                   r"question \(repeats: 1\)"):
        rescore.rescore_task("svamp", rows, run["trace"], rescore.RULES["best"],
                             rescore.load_task("svamp"))


@pytest.mark.slow
def test_maj_at_n_of_a_self_consistency_run_is_its_own_score(run, tiny_model_dir,
                                                             tmp_path_factory):
    """Scored with the task's own filter and metric per candidate, the vote over all N samples
    returns what the run returned, so maj@N is the run's flexible-extract exact_match."""
    sc = cli_run(tiny_model_dir, tmp_path_factory.mktemp("sc-run"), mode="sample",
                 n_samples=3, temperature=1.0)
    for record in sc["trace"].values():  # the vote over all samples picks the run's own
        answers = [c["answer"] for c in record["candidates"]]
        assert curves.vote_pick(answers, range(len(answers))) == record["chosen"]
    assert any(r["chosen"] != 0 for r in sc["trace"].values())
    task = rescore.load_task("svamp")
    right = rescore.candidate_scores("svamp", sc["rows"], sc["trace"], task=task)
    assert all(len(r) == 3 for r in right.values()) and len(right) == len(SVAMP_ROWS)
    points = curves.curve_from_run(sc["trace"], sc["rows"], right)
    flexible = [r["exact_match"] for r in sc["rows"] if r["filter"] == "flexible-extract"]
    assert [p.k for p in points] == [1, 2, 3]
    assert points[-1].accuracy == pytest.approx(sum(flexible) / len(flexible), abs=1e-12)
    # the same from a compare results folder's cell files
    cells = sc["dir"] / "compare" / "cells"
    cells.mkdir(parents=True)
    shutil.copy(sc["dir"] / "trace.jsonl", cells / "svamp__sc.trace.jsonl")
    shutil.copy(sc["samples"], cells / "svamp__sc.samples.jsonl")
    assert curves.cell_curve(sc["dir"] / "compare", "svamp", "sc") == points
    # ... and from the digest alone, as a committed folder keeps it
    compare_run.write_digest(sc["dir"] / "compare", "svamp", "sc")
    for suffix in (".trace.jsonl", ".samples.jsonl"):
        (cells / f"svamp__sc{suffix}").unlink()
    assert curves.cell_curve(sc["dir"] / "compare", "svamp", "sc") == points
    tokens = [r["tokens_generated"] for r in sc["trace"].values()]
    assert points[-1].tokens == pytest.approx(sum(tokens) / len(tokens), abs=1e-9)
    # the softreason run's chosen candidates score what its samples say
    scores = rescore.candidate_scores("svamp", run["rows"], run["trace"], task=task)
    for row in run["rows"]:
        if row["filter"] == "flexible-extract":
            record = run["trace"][prompt_sha(artifacts.request_args(row)[0])]
            assert scores[record["prompt_sha"]][record["chosen"]] == row["exact_match"]
