"""lm-eval-softreason diagnose on a hand-made results folder whose every figure is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lm_eval_softreason.analysis import artifacts, diagnose
from lm_eval_softreason.strategies.config import SoftReasonConfig


def _cand(answer, r_verifier, tokens=10):
    return {"round": 0, "text": f"so {answer}", "answer": answer, "r_verifier": r_verifier,
            "tokens": tokens}


def _write(folder: Path, strategy: str, questions: list[dict], config: str | None = None
           ) -> None:
    cells = folder / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    with (cells / f"svamp__{strategy}.samples.jsonl").open("w") as f:
        for q in questions:
            for flt, score in (("strict-match", 0.0), ("flexible-extract", q["score"])):
                f.write(json.dumps({"prompt_hash": q["sha"] + "f" * 48, "target": q["gold"],
                                    "filter": flt, "exact_match": score}) + "\n")
    with (cells / f"svamp__{strategy}.trace.jsonl").open("w") as f:
        for q in questions:
            f.write(json.dumps({"task": "svamp", "prompt_sha": q["sha"],
                                "candidates": q["cands"], "verifier_answers": q["verifier"],
                                "rounds": 2,
                                "stop_reason": "converged", "fallback": None,
                                "config": config}) + "\n")


def test_figures_of_a_known_folder(tmp_path):
    sr = [
        # right candidates exist, vote would find 5, the search returned the wrong 4
        {"sha": "a" * 16, "gold": "5", "score": 0.0, "verifier": ["4"],
         "cands": [_cand("4", 1.0), _cand("5.0", 0.0), _cand("$5", 0.0)]},
        # every candidate right
        {"sha": "b" * 16, "gold": "7", "score": 1.0, "verifier": ["7"],
         "cands": [_cand("7", 1.0), _cand("7", 1.0), _cand("7", 1.0)]},
    ]
    greedy = [{"sha": "a" * 16, "gold": "5", "score": 1.0, "verifier": [], "cands": []},
              {"sha": "b" * 16, "gold": "7", "score": 1.0, "verifier": [], "cands": []}]
    _write(tmp_path, "softreason", sr)
    _write(tmp_path, "greedy", greedy)
    records = diagnose.join(tmp_path, "svamp", "softreason")
    greedy_scores = {h: float(s["exact_match"]) for h, s in diagnose.flexible_samples(
        tmp_path / "cells" / "svamp__greedy.samples.jsonl").items()}
    text = "\n".join(diagnose.diagnose(records)
                     + [diagnose.versus(records, "greedy", greedy_scores)])
    assert "returned answer right (lm-eval flexible-extract): 1.0/2 = 50.0%" in text
    assert "oracle (some candidate right): 2/2 = 100.0%" in text
    assert "majority vote over candidates would score: 2/2 = 100.0%" in text
    assert "first candidate of round 0 would score: 1/2 = 50.0%" in text
    assert "verifier's own answer right: 1/2 = 50.0%" in text
    assert "candidates right (base rate): 5/6 = 83.3%" in text
    assert "P(right | verifier agreed): 3/4 = 75.0%; P(right | verifier disagreed): 2/2" in text
    assert "questions with both right and wrong candidates: 1" in text
    assert ("vs greedy on the same 2 questions: 1 vs 2 right; 0 won, 1 lost, 1 tied; "
            "sign test p = 1") in text


def test_cli_compares_with_a_cell_of_another_folder(tmp_path, capsys):
    mine = [{"sha": c * 16, "gold": "1", "score": score, "verifier": [], "cands": [_cand("1", 1.0)]}
            for c, score in (("a", 1.0), ("b", 0.0), ("c", 0.0))]
    # the other folder answered only two of the three questions, and both right
    theirs = [{"sha": c * 16, "gold": "1", "score": 1.0, "verifier": [], "cands": []}
              for c in ("b", "c")]
    _write(tmp_path / "gpu", "softreason", mine)
    _write(tmp_path / "cpu", "sc", theirs)
    assert diagnose.main(["--out", str(tmp_path / "gpu"), "--task", "svamp",
                      "--versus", f"{tmp_path / 'cpu'}:sc"]) == 0
    out = capsys.readouterr().out
    assert "on the same 2 questions: 0 vs 2 right; 0 won, 2 lost, 0 tied; sign test p = 0.5" in out


def test_versus_a_committed_folder_reads_its_digest(tmp_path, capsys):
    """A committed folder keeps cell files and digests, not samples: the same comparison."""
    mine = [{"sha": c * 16, "gold": "1", "score": score, "verifier": [], "cands": [_cand("1", 1.0)]}
            for c, score in (("a", 1.0), ("b", 0.0), ("c", 1.0))]
    _write(tmp_path / "new", "softreason", mine)
    cells = tmp_path / "old" / "cells"
    cells.mkdir(parents=True)
    with (cells / "svamp__sc.digest.jsonl").open("w") as f:
        for i, (c, score) in enumerate((("a", 0.0), ("b", 1.0), ("c", 0.0))):
            f.write(json.dumps({"doc_id": i, "prompt_sha": c * 16, "scores": {
                "strict-match": {"exact_match": 1.0 - score},
                "flexible-extract": {"exact_match": score}}}) + "\n")
    argv = ["--out", str(tmp_path / "new"), "--task", "svamp", "--versus"]
    assert diagnose.main([*argv, f"{tmp_path / 'old'}:sc"]) == 0
    assert ("on the same 3 questions: 2 vs 1 right; 2 won, 1 lost, 0 tied; sign test p = 1"
            in capsys.readouterr().out)
    with pytest.raises(SystemExit, match="no svamp__greedy samples or digest in"):
        diagnose.main([*argv, f"{tmp_path / 'old'}:greedy"])


@pytest.mark.parametrize("wins, losses, p", [
    (0, 0, 1.0), (1, 0, 1.0), (0, 2, 0.5), (3, 3, 1.0), (0, 5, 0.0625), (1, 5, 0.21875),
    (4, 23, 2 * sum(math.comb(27, i) for i in range(5)) / 2**27),  # docs/results.md: p = 0.0003
])
def test_sign_test_is_the_exact_two_sided_binomial(wins, losses, p):
    assert diagnose.sign_test(wins, losses) == pytest.approx(p, rel=1e-12)
    assert diagnose.sign_test(losses, wins) == diagnose.sign_test(wins, losses)


def test_gsm8k_targets_are_cut_to_the_final_answer(tmp_path):
    solution = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n"
                "She makes 9 * 2 = $<<9*2=18>>18.\n#### 18")
    assert artifacts.gold_answer(solution) == "18"
    assert artifacts.gold_answer(7.0) == "7.0"
    q = {"sha": "a" * 16, "gold": solution, "score": 1.0, "verifier": ["18"],
         "cands": [_cand("18", 1.0), _cand("9", 0.0)]}
    _write(tmp_path, "softreason", [q])
    text = "\n".join(diagnose.diagnose(diagnose.join(tmp_path, "svamp", "softreason")))
    assert "oracle (some candidate right): 1/1 = 100.0%" in text
    assert "verifier's own answer right: 1/1 = 100.0%" in text


def test_a_cell_without_verifier_reports_no_verifier_figures(tmp_path):
    q = {"sha": "a" * 16, "gold": "3", "score": 1.0, "verifier": [None, None],
         "cands": [_cand("3", 0.0), _cand("4", 0.0)]}
    _write(tmp_path, "softreason", [q])
    text = "\n".join(diagnose.diagnose(diagnose.join(tmp_path, "svamp", "softreason")))
    assert "verifier: none ran in this cell" in text
    assert "verifier's own answer" not in text and "P(right | verifier" not in text
    assert "candidates right (base rate): 1/2 = 50.0%" in text
    assert "questions with both right and wrong candidates: 1; the returned answer was right " \
           "in 1.0/1 = 100.0%" in text


def test_truncated_candidates_are_counted_against_the_cap(tmp_path):
    q = {"sha": "a" * 16, "gold": "3", "score": 0.0, "verifier": ["3"],
         "cands": [_cand("3", 1.0, tokens=12), _cand("8", 0.0, tokens=64),
                   _cand("3", 1.0, tokens=64)]}
    _write(tmp_path, "softreason", [q])
    records = diagnose.join(tmp_path, "svamp", "softreason")
    text = "\n".join(diagnose.diagnose(records, max_gen_toks=64))
    assert ("candidates at the 64-token generation cap: 2/3 = 66.7%; right among them: "
            "1/2 = 50.0%; among the others: 1/1 = 100.0%") in text


@pytest.mark.fault("a cell's trace written under other settings (sigma=3 beside a sigma=1 cell)",
                   "diagnose refuses (exit 2), naming the first record and both fingerprints")
def test_a_trace_under_other_settings_is_refused(tmp_path, capsys):
    q = {"sha": "a" * 16, "gold": "3", "score": 1.0, "verifier": ["3"], "cands": [_cand("3", 1.0)]}
    _write(tmp_path, "softreason", [q], config=SoftReasonConfig(sigma=3.0).fingerprint())
    cell = tmp_path / "cells" / "svamp__softreason.json"
    sigma1 = SoftReasonConfig().public_dict()
    cell.write_text(json.dumps({"schema": 1, "task": "svamp", "strategy": "softreason",
                                "lm_eval_config": {"softreason": sigma1}}))
    with pytest.raises(SystemExit) as exit_:
        diagnose.main(["--out", str(tmp_path), "--task", "svamp"])
    assert exit_.value.code == 2
    trace = tmp_path / "cells" / "svamp__softreason.trace.jsonl"
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"lm-eval-softreason diagnose: error: {trace} record 1 (task svamp, prompt_sha "
        f"{'a' * 16}) is not from this run: its settings fingerprint (config) is "
        f"{SoftReasonConfig(sigma=3.0).fingerprint()}, but {cell}'s config.softreason "
        f"fingerprints to {SoftReasonConfig().fingerprint()}")
    # the cell's own settings: diagnosed
    _write(tmp_path, "softreason", [q], config=SoftReasonConfig().fingerprint())
    assert diagnose.main(["--out", str(tmp_path), "--task", "svamp"]) == 0
