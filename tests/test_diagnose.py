"""examples/diagnose.py on a hand-made results folder whose every figure is known."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "diagnose.py"


def _load():
    spec = importlib.util.spec_from_file_location("softreason_diagnose_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cand(answer, r_verifier):
    return {"round": 0, "text": f"so {answer}", "answer": answer, "r_verifier": r_verifier}


def _write(folder: Path, strategy: str, questions: list[dict]) -> None:
    cells = folder / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    with (cells / f"svamp__{strategy}.samples.jsonl").open("w") as f:
        for q in questions:
            for flt, score in (("strict-match", 0.0), ("flexible-extract", q["score"])):
                f.write(json.dumps({"prompt_hash": q["sha"] + "f" * 48, "target": q["gold"],
                                    "filter": flt, "exact_match": score}) + "\n")
    with (cells / f"svamp__{strategy}.trace.jsonl").open("w") as f:
        for q in questions:
            f.write(json.dumps({"prompt_sha": q["sha"], "candidates": q["cands"],
                                "verifier_answers": q["verifier"], "rounds": 2,
                                "stop_reason": "converged", "fallback": None}) + "\n")


def test_figures_of_a_known_folder(tmp_path):
    diag = _load()
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
    records = diag.join(tmp_path, "svamp", "softreason")
    greedy_scores = {h: float(s["exact_match"]) for h, s in diag.flexible_samples(
        tmp_path / "cells" / "svamp__greedy.samples.jsonl").items()}
    text = "\n".join(diag.diagnose(records) + [diag.versus(records, "greedy", greedy_scores)])
    assert "returned answer right (lm-eval flexible-extract): 1.0/2 = 50.0%" in text
    assert "oracle (some candidate right): 2/2 = 100.0%" in text
    assert "majority vote over candidates would score: 2/2 = 100.0%" in text
    assert "first candidate of round 0 would score: 1/2 = 50.0%" in text
    assert "verifier's own answer right: 1/2 = 50.0%" in text
    assert "candidates right (base rate): 5/6 = 83.3%" in text
    assert "P(right | verifier agreed): 3/4 = 75.0%; P(right | verifier disagreed): 2/2" in text
    assert "questions with both right and wrong candidates: 1" in text
    assert "vs greedy on the same 2 questions: 1 vs 2 right; 0 won, 1 lost, 1 tied" in text


def test_cli_compares_with_a_cell_of_another_folder(tmp_path, capsys):
    diag = _load()
    mine = [{"sha": c * 16, "gold": "1", "score": score, "verifier": [], "cands": [_cand("1", 1.0)]}
            for c, score in (("a", 1.0), ("b", 0.0), ("c", 0.0))]
    # the other folder answered only two of the three questions, and both right
    theirs = [{"sha": c * 16, "gold": "1", "score": 1.0, "verifier": [], "cands": []}
              for c in ("b", "c")]
    _write(tmp_path / "gpu", "softreason", mine)
    _write(tmp_path / "cpu", "sc", theirs)
    assert diag.main(["--out", str(tmp_path / "gpu"), "--task", "svamp",
                      "--versus", f"{tmp_path / 'cpu'}:sc"]) == 0
    out = capsys.readouterr().out
    assert "on the same 2 questions: 0 vs 2 right; 0 won, 2 lost, 0 tied" in out
