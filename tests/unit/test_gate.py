"""The regression gate, on results JSONs shaped like the ones lm-eval 0.4.13 writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lm_eval_softreason.analysis.gate import main

GSM8K = {
    "name": "gsm8k",
    "alias": "gsm8k",
    "sample_len": 10,
    "exact_match,strict-match": 0.5,
    "exact_match_stderr,strict-match": 0.1667,
    "exact_match,flexible-extract": 0.6,
    "exact_match_stderr,flexible-extract": 0.1633,
}
SVAMP = {"name": "svamp", "alias": "svamp", "sample_len": 10, "exact_match,none": 0.7,
         "exact_match_stderr,none": 0.1528}
SOFTREASON = {
    "mode": "softreason", "preset": "paper", "sigma": 1.0, "n_init": 5, "batch": 5,
    "max_rounds": 4, "select": "best", "verifier": "self", "coherence": "geo_mean_prob",
    "seed": 1234,
}


def make_results(**overrides: Any) -> dict[str, Any]:
    """A results dict as written by ``--output_path`` (evaluator + EvaluationTracker fields)."""
    doc: dict[str, Any] = {
        "results": {"gsm8k": dict(GSM8K), "svamp": dict(SVAMP)},
        "group_subtasks": {"gsm8k": [], "svamp": []},
        "configs": {
            "gsm8k": {"task": "gsm8k", "dataset_path": "gsm8k", "num_fewshot": 5,
                      "filter_list": [{"name": "strict-match"}, {"name": "flexible-extract"}]},
            "svamp": {"task": "svamp", "dataset_path": "ChilleD/SVAMP", "num_fewshot": 0},
        },
        "versions": {"gsm8k": 3.0, "svamp": 1.0},
        "n-shot": {"gsm8k": 5, "svamp": 0},
        "higher_is_better": {"gsm8k": {"exact_match": True}, "svamp": {"exact_match": True}},
        "n-samples": {"gsm8k": {"original": 1319, "effective": 10},
                      "svamp": {"original": 300, "effective": 10}},
        "config": {
            "model": "softreason",
            "model_args": {"pretrained": "org/tiny-model", "sigma": 1.0,
                           "trace_path": "/tmp/run-1/trace.jsonl"},
            "model_num_parameters": 494032768,
            "model_dtype": "torch.float32",
            "model_revision": "main",
            "model_sha": "",
            "softreason": dict(SOFTREASON),
            "batch_size": "1",
            "batch_sizes": [],
            "device": "cpu",
            "use_cache": None,
            "limit": 10.0,
            "bootstrap_iters": 100000,
            "gen_kwargs": {},
            "random_seed": 1234,
            "numpy_seed": 1234,
            "torch_seed": 1234,
            "fewshot_seed": 1234,
        },
        "git_hash": "a1b2c3d",
        "date": 1750000000.0,
        "pretty_env_info": "PyTorch version: 2.13.0+cpu ...",
        "transformers_version": "4.57.0",
        "lm_eval_version": "0.4.13",
        "upper_git_hash": None,
        "task_hashes": {},
        "model_source": "softreason",
        "model_name": "org/tiny-model",
        "model_name_sanitized": "org__tiny-model",
        "system_instruction": None,
        "system_instruction_sha": None,
        "fewshot_as_multiturn": False,
        "chat_template": None,
        "chat_template_sha": None,
        "start_time": 100.0,
        "end_time": 160.0,
        "total_evaluation_time_seconds": "60.0",
    }
    for dotted, value in overrides.items():
        *parents, last = dotted.split("__")
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value
    return doc


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


def with_score(task: str, key: str, value: float) -> dict[str, Any]:
    doc = make_results()
    doc["results"][task][key] = value
    return doc


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    return write(tmp_path / "baseline.json", make_results())


def gate(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def row(out: str, task: str, key: str) -> list[str]:
    """The cells of the table row for task/key (fails when there is none)."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0] == task and cells[1].split(" ")[0] == key:
            return cells
    raise AssertionError(f"no row for {task} {key} in:\n{out}")


# ----------------------------------------------------------------------------- verdicts


def test_small_drop_within_tolerance_passes(tmp_path, baseline, capsys):
    results = write(tmp_path / "now.json", with_score("gsm8k", "exact_match,strict-match", 0.49))
    code, out, _ = gate(capsys, results, "--baseline", baseline)
    assert code == 0
    assert row(out, "gsm8k", "exact_match,strict-match") == [
        "gsm8k", "exact_match,strict-match", "0.5000", "0.4900", "-0.0100", "OK"]
    assert "PASS" in out
    # stderr keys and the fixed name/alias/sample_len entries are not gated
    assert "_stderr" not in out and "alias" not in out and "sample_len" not in out


def test_drop_of_exactly_the_tolerance_passes(tmp_path, baseline, capsys):
    results = write(tmp_path / "now.json", with_score("gsm8k", "exact_match,strict-match", 0.48))
    code, out, _ = gate(capsys, results, "--baseline", baseline, "--tolerance", "0.02")
    assert code == 0, out


def test_drop_beyond_tolerance_fails_with_drop_row(tmp_path, baseline, capsys):
    results = write(tmp_path / "now.json", with_score("gsm8k", "exact_match,strict-match", 0.45))
    code, out, _ = gate(capsys, results, "--baseline", baseline)
    assert code == 1
    assert row(out, "gsm8k", "exact_match,strict-match") == [
        "gsm8k", "exact_match,strict-match", "0.5000", "0.4500", "-0.0500", "DROP"]
    assert row(out, "svamp", "exact_match,none")[-1] == "OK"
    assert "FAIL: 1 dropped" in out


def test_a_larger_tolerance_accepts_the_same_drop(tmp_path, baseline, capsys):
    results = write(tmp_path / "now.json", with_score("gsm8k", "exact_match,strict-match", 0.45))
    assert gate(capsys, results, "--baseline", baseline, "--tolerance", "0.1")[0] == 0


def test_nan_score_is_a_drop(tmp_path, baseline, capsys):
    results = write(tmp_path / "now.json", with_score("svamp", "exact_match,none", math.nan))
    code, out, _ = gate(capsys, results, "--baseline", baseline)
    assert code == 1
    assert row(out, "svamp", "exact_match,none") == [
        "svamp", "exact_match,none", "0.7000", "nan", "-", "DROP"]


def test_missing_task_fails(tmp_path, baseline, capsys):
    doc = make_results()
    del doc["results"]["svamp"], doc["n-samples"]["svamp"]
    code, out, _ = gate(capsys, write(tmp_path / "now.json", doc), "--baseline", baseline)
    assert code == 1
    assert row(out, "svamp", "exact_match,none") == [
        "svamp", "exact_match,none", "0.7000", "-", "-", "MISSING"]
    assert "1 missing" in out


def test_missing_metric_fails(tmp_path, baseline, capsys):
    doc = make_results()
    del doc["results"]["gsm8k"]["exact_match,flexible-extract"]
    code, out, _ = gate(capsys, write(tmp_path / "now.json", doc), "--baseline", baseline)
    assert code == 1
    assert row(out, "gsm8k", "exact_match,flexible-extract")[-1] == "MISSING"


def test_new_task_is_reported_but_passes(tmp_path, baseline, capsys):
    doc = make_results()
    doc["results"]["svamp_cot"] = {"alias": "svamp_cot", "exact_match,none": 0.1}
    code, out, _ = gate(capsys, write(tmp_path / "now.json", doc), "--baseline", baseline)
    assert code == 0
    assert row(out, "svamp_cot", "exact_match,none") == [
        "svamp_cot", "exact_match,none", "-", "0.1000", "-", "NEW"]


def test_lower_is_better_metric_flips_direction(tmp_path, capsys):
    def doc_with(ppl: float) -> dict[str, Any]:
        doc = make_results()
        doc["results"]["svamp"]["word_perplexity,none"] = ppl
        doc["higher_is_better"]["svamp"]["word_perplexity"] = False
        return doc

    baseline = write(tmp_path / "base.json", doc_with(10.0))
    worse = write(tmp_path / "worse.json", doc_with(10.5))
    better = write(tmp_path / "better.json", doc_with(9.0))

    code, out, _ = gate(capsys, worse, "--baseline", baseline)
    assert code == 1
    assert row(out, "svamp", "word_perplexity,none") == [
        "svamp", "word_perplexity,none (lower is better)", "10.0000", "10.5000", "+0.5000", "DROP"]

    code, out, _ = gate(capsys, better, "--baseline", baseline)
    assert code == 0
    assert row(out, "svamp", "word_perplexity,none")[-1] == "OK"


def test_unknown_direction_defaults_to_higher_is_better(tmp_path, capsys):
    base, now = make_results(), with_score("svamp", "exact_match,none", 0.6)
    for doc in (base, now):
        del doc["higher_is_better"]
    code, out, _ = gate(capsys, write(tmp_path / "now.json", now),
                        "--baseline", write(tmp_path / "base.json", base))
    assert code == 1
    assert row(out, "svamp", "exact_match,none")[-1] == "DROP"


# ----------------------------------------------------------------------------- --metric


@pytest.fixture
def strict_drop(tmp_path: Path) -> Path:
    """Results where only gsm8k exact_match,strict-match dropped."""
    return write(tmp_path / "now.json", with_score("gsm8k", "exact_match,strict-match", 0.3))


def test_metric_and_filter_select_one_key(strict_drop, baseline, capsys):
    code, out, _ = gate(capsys, strict_drop, "--baseline", baseline,
                        "--metric", "exact_match,flexible-extract")
    assert code == 0
    assert row(out, "gsm8k", "exact_match,flexible-extract")[-1] == "OK"
    assert "strict-match" not in out and "svamp" not in out


@pytest.mark.parametrize("selection", ["exact_match", "strict-match", "exact_match,strict-match"])
def test_selections_that_include_the_dropped_key_fail(strict_drop, baseline, capsys, selection):
    code, out, _ = gate(capsys, strict_drop, "--baseline", baseline, "--metric", selection)
    assert code == 1
    assert row(out, "gsm8k", "exact_match,strict-match")[-1] == "DROP"


def test_filter_only_selection_spans_metrics(strict_drop, baseline, capsys):
    code, out, _ = gate(capsys, strict_drop, "--baseline", baseline, "--metric", "none")
    assert code == 0
    assert row(out, "svamp", "exact_match,none")[-1] == "OK"
    assert "gsm8k" not in out.split("\n\n", 1)[1]  # no gsm8k rows (its path is in the header)


def test_repeated_metric_options_add_up(strict_drop, baseline, capsys):
    code, out, _ = gate(capsys, strict_drop, "--baseline", baseline,
                        "--metric", "flexible-extract", "--metric", "none")
    assert code == 0
    row(out, "gsm8k", "exact_match,flexible-extract")
    row(out, "svamp", "exact_match,none")
    assert "strict-match" not in out


def test_unknown_metric_name_is_an_error(strict_drop, baseline, capsys):
    code, _, err = gate(capsys, strict_drop, "--baseline", baseline, "--metric", "acc_norm")
    assert code == 2
    assert "'acc_norm' is neither a metric nor a filter" in err
    assert "metrics: exact_match" in err and "flexible-extract" in err


def test_selection_matching_no_key_is_an_error(tmp_path, capsys):
    doc = make_results()
    doc["results"]["svamp"]["acc,none"] = 0.4
    baseline = write(tmp_path / "base.json", doc)
    code, _, err = gate(capsys, baseline, "--baseline", baseline, "--metric", "acc,strict-match")
    assert code == 2
    assert "'acc,strict-match' selects nothing" in err


# ------------------------------------------------------------------------------- config


def test_config_mismatch_exits_3_naming_both_values(tmp_path, baseline, capsys):
    doc = make_results(config__limit=20.0, config__softreason__sigma=0.5)
    doc["n-samples"]["gsm8k"]["effective"] = 20
    doc["versions"]["svamp"] = 2.0
    code, out, _ = gate(capsys, write(tmp_path / "now.json", doc), "--baseline", baseline)
    assert code == 3
    assert "CONFIG MISMATCH" in out
    assert "config.limit: baseline 10.0, results 20.0" in out
    assert "config.softreason.sigma: baseline 1.0, results 0.5" in out
    assert ('n-samples[gsm8k]: baseline {"effective": 10, "original": 1319}, '
            'results {"effective": 20, "original": 1319}') in out
    assert "versions[svamp]: baseline 1.0, results 2.0" in out
    assert "| verdict" not in out  # nothing was compared


def test_model_args_mismatch_names_the_key(tmp_path, baseline, capsys):
    doc = make_results(config__model_args="pretrained=org/other-model,sigma=1.0")
    code, out, _ = gate(capsys, write(tmp_path / "now.json", doc), "--baseline", baseline)
    assert code == 3
    assert ('config.model_args.pretrained: baseline "org/tiny-model", '
            'results "org/other-model"') in out


def test_model_sha_is_compared_when_both_files_know_it(tmp_path, capsys):
    baseline = write(tmp_path / "base.json", make_results(config__model_sha="aaaa"))
    now = write(tmp_path / "now.json", make_results(config__model_sha="bbbb"))
    code, out, _ = gate(capsys, now, "--baseline", baseline)
    assert code == 3
    assert 'config.model_sha: baseline "aaaa", results "bbbb"' in out


def test_softreason_section_on_one_side_only_is_a_mismatch(tmp_path, baseline, capsys):
    doc = make_results()
    del doc["config"]["softreason"]
    code, out, _ = gate(capsys, write(tmp_path / "now.json", doc), "--baseline", baseline)
    assert code == 3
    shown = json.dumps(SOFTREASON, sort_keys=True)
    assert f"config.softreason: baseline {shown}, results (absent)" in out


def test_settings_that_do_not_change_scores_are_ignored(tmp_path, baseline, capsys):
    # model_args as the CLI string instead of a dict, other paths/batch size/device/threads,
    # volatile fields and an unknown (offline) model_sha: all still the same experiment.
    doc = make_results(
        config__model_args="pretrained=org/tiny-model,sigma=1.0,trace_path=/elsewhere/t.jsonl,"
                           "batch_size=8,device=cuda:0",
        config__device="cuda:0", config__batch_size="8", config__model_sha="0123abcd",
        git_hash="ffffff", date=1760000000.0,
    )
    doc["config"]["softreason"].update(num_threads=4, bo_workers=2, max_active=3,
                                       max_fallback_rate=0.5)
    code, out, _ = gate(capsys, write(tmp_path / "now.json", doc), "--baseline", baseline)
    assert code == 0, out
    assert "MISMATCH" not in out


def test_allow_config_mismatch_compares_with_a_warning(tmp_path, baseline, capsys):
    doc = make_results(config__limit=20.0)
    doc["results"]["gsm8k"]["exact_match,strict-match"] = 0.3
    now = write(tmp_path / "now.json", doc)
    code, out, _ = gate(capsys, now, "--baseline", baseline, "--allow-config-mismatch")
    assert code == 1
    assert "WARNING: config mismatch" in out
    assert "config.limit: baseline 10.0, results 20.0" in out
    assert row(out, "gsm8k", "exact_match,strict-match")[-1] == "DROP"

    doc["results"]["gsm8k"]["exact_match,strict-match"] = 0.5
    write(now, doc)
    assert gate(capsys, now, "--baseline", baseline, "--allow-config-mismatch")[0] == 0


# ------------------------------------------------------------------------------- --update


def test_update_round_trip(tmp_path, capsys):
    run_dir = tmp_path / "out" / "org__tiny-model"
    results = write(run_dir / "results_2025-06-01T10-00-00.000001.json", make_results())
    target = tmp_path / "baselines" / "ci" / "softreason.json"
    code, out, _ = gate(capsys, tmp_path / "out", "--baseline", target, "--update")
    assert code == 0
    assert f"Wrote baseline {target}" in out
    assert any(line.startswith("| gsm8k ") and "exact_match,strict-match" in line
               and line.endswith("| 0.5000 |") for line in out.splitlines())

    written = json.loads(target.read_text())
    assert set(written) == {
        "results", "higher_is_better", "versions", "n-shot", "n-samples", "config"}
    assert written["results"] == make_results()["results"]
    assert "use_cache" not in written["config"] and "batch_sizes" not in written["config"]
    assert "trace_path" not in written["config"]["model_args"]
    assert written["config"]["softreason"] == SOFTREASON

    code, out, _ = gate(capsys, results, "--baseline", target)
    assert code == 0, out
    assert "MISMATCH" not in out
    # and it still catches a drop
    worse = write(tmp_path / "worse.json", with_score("svamp", "exact_match,none", 0.5))
    assert gate(capsys, worse, "--baseline", target)[0] == 1


def test_update_strips_paths_from_string_model_args(tmp_path, capsys):
    results = write(tmp_path / "r.json", make_results(
        config__model_args="pretrained=org/tiny-model,trace_path=/home/me/t.jsonl,sigma=1.0"))
    target = tmp_path / "b.json"
    assert gate(capsys, results, "--baseline", target, "--update")[0] == 0
    model_args = json.loads(target.read_text())["config"]["model_args"]
    assert model_args == "pretrained=org/tiny-model,sigma=1.0"
    assert gate(capsys, results, "--baseline", target)[0] == 0


def test_update_refuses_a_directory_as_target(tmp_path, capsys):
    results = write(tmp_path / "r.json", make_results())
    code, _, err = gate(capsys, results, "--baseline", tmp_path, "--update")
    assert code == 2
    assert f"got directory {tmp_path}" in err


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", ["-1", "nan", "abc", "inf"])
def test_bad_tolerance_exits_2(baseline, capsys, bad):
    code, out, err = gate(capsys, baseline, "--baseline", baseline, "--tolerance", bad)
    assert code == 2
    assert "argument --tolerance: must be a finite number >= 0" in err
    assert repr(bad) in err
    assert out == ""


def test_missing_results_file_exits_2(tmp_path, baseline, capsys):
    missing = tmp_path / "nope" / "results.json"
    code, _, err = gate(capsys, missing, "--baseline", baseline)
    assert code == 2
    assert f"results file not found: {missing}" in err


def test_missing_baseline_file_exits_2(tmp_path, baseline, capsys):
    missing = tmp_path / "no-baseline.json"
    code, _, err = gate(capsys, baseline, "--baseline", missing)
    assert code == 2
    assert f"baseline file not found: {missing}" in err


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ('["a list"]', "is not an lm-eval results JSON"),
    ('{"results": {"gsm8k": 0.5}}', "results['gsm8k'] must be an object"),
    ('{"results": {}, "config": "softreason"}', "'config' must be an object"),
])
@pytest.mark.fault("gate given a malformed results or baseline file",
                   "exit 2 with one line naming the file and what is wrong")
def test_malformed_file_exits_2_naming_it(tmp_path, baseline, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, _, err = gate(capsys, bad, "--baseline", baseline)
    assert code == 2
    assert str(bad) in err and message in err
    assert err.startswith("lm-eval-softreason gate: error: ") and err.count("\n") == 1


def test_baseline_without_metrics_exits_2(tmp_path, capsys):
    empty = write(tmp_path / "empty.json", {"results": {}})
    code, _, err = gate(capsys, empty, "--baseline", empty)
    assert code == 2
    assert f"baseline {empty} has no numeric metrics" in err


# ------------------------------------------------------------------------------ directories


def test_directory_input_uses_newest_results_file(tmp_path, baseline, capsys):
    run_dir = tmp_path / "out" / "org__tiny-model"
    newer = write(run_dir / "results_2025-06-02T09-30-00.000002.json", make_results())
    # Written last, so newest by mtime: the timestamp in the name must win.
    write(run_dir / "results_2025-06-01T09-30-00.000001.json",
          with_score("gsm8k", "exact_match,strict-match", 0.1))
    (run_dir / "samples_gsm8k_2025-06-03T09-30-00.000003.jsonl").write_text("{}\n")
    code, out, _ = gate(capsys, tmp_path / "out", "--baseline", baseline)
    assert code == 0, out
    assert f"Regression gate: {newer} vs baseline" in out


def test_directory_without_results_exits_2(tmp_path, baseline, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = gate(capsys, tmp_path / "empty", "--baseline", baseline)
    assert code == 2
    assert f"no results_*.json found under results directory {tmp_path / 'empty'}" in err


# ------------------------------------------------------------------------------- console


def test_python_m_entry_point_returns_the_gate_exit_code(tmp_path, baseline):
    results = write(tmp_path / "now.json", with_score("gsm8k", "exact_match,strict-match", 0.45))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_EVALUATE_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval_softreason", "gate", str(results), "--baseline",
         str(baseline), "--metric", "exact_match,strict-match"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "DROP" in proc.stdout
    assert proc.stderr == ""


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "exit codes: 0 pass, 1 regression, 2 bad input, 3 config mismatch" in out


# Digests of tests/conftest.py::build_tiny_model's output (see the test below).
WEIGHTS_SHA256 = "88244ca9530081e7a416002efa5168ec30df2be2bfc41c29af4f2db866a33697"
TOKENS_SHA256 = "e7fe698448e86261a58876945a5aeb1b5ff9cef70cc27189226d7811ab6beb40"


def test_tiny_model_is_pinned(tiny_model_dir):
    """The CI gate's golden outputs (.ci/golden_outputs.json) come from this model: its weights
    and tokens must not move when transformers or tokenizers is upgraded. If this fails, the
    builder changed: re-record with ``python .ci/regression_gate.py --update``, then update
    these digests."""
    import hashlib

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from tests.conftest import CORPUS

    weights = hashlib.sha256()
    for path in sorted(Path(tiny_model_dir).glob("*.safetensors")):
        tensors = load_file(str(path))
        for name in sorted(tensors):
            weights.update(name.encode())
            weights.update(tensors[name].contiguous().numpy().tobytes())
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokens = hashlib.sha256(json.dumps(
        [sorted(tok.get_vocab().items()), [tok(line)["input_ids"] for line in CORPUS]]
    ).encode())
    assert weights.hexdigest() == WEIGHTS_SHA256
    assert tokens.hexdigest() == TOKENS_SHA256
