"""lm-eval-softreason compare: one tiny end-to-end run (greedy, sc, softreason on 1 SVAMP
question), resume, report-only (the committed tables rebuilt byte for byte), and the pure
helpers (limits, run order, budget matching, settings checks)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from lm_eval_softreason.analysis.compare import cli as compare_cli
from lm_eval_softreason.analysis.compare import plan as compare_plan
from lm_eval_softreason.analysis.compare import plot as compare_plot
from lm_eval_softreason.analysis.compare import report as compare_report
from lm_eval_softreason.analysis.compare import run as compare_run
from lm_eval_softreason.analysis import folders
from lm_eval_softreason.settings import CELL_SCHEMA
from lm_eval_softreason.cli import main as cli_main
from lm_eval_softreason.trace import read_trace
from tests.helpers import ROOT

RESULTS = ROOT / "docs" / "results"


SVAMP_ITEMS = [
    {"ID": f"chal-{i + 1}", "Body": f"Tom has {i + 3} apples. He eats 2 of them.",
     "Question": "How many apples does Tom have now?", "Equation": f"( {i + 3}.0 - 2.0 )",
     "Answer": float(i + 1), "Type": "Subtraction"}
    for i in range(3)
]


@pytest.fixture
def svamp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    (data / "svamp").mkdir(parents=True)
    (data / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ITEMS), encoding="utf-8")
    monkeypatch.setenv("SOFTREASON_DATA_DIR", str(data))
    return data


def _argv(model: str, out: Path, *extra: str) -> list[str]:
    return [
        "--model", model, "--tasks", "svamp", "--strategies", "greedy,sc,softreason",
        "--limit", "1", "--gen-kwargs", "max_gen_toks=8", "--batch-size", "8",
        "--extra-model-args", "max_rounds=1,n_init=2,batch=2,verifier_max_tokens=8",
        "--out", str(out), *extra,
    ]


@pytest.mark.slow
def test_end_to_end_resume_and_report(tiny_model_dir, svamp_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert compare_cli.main(_argv(tiny_model_dir, out)) == 0
    printed = capsys.readouterr().out

    cells = out / "cells"
    for strategy in ("greedy", "sc", "softreason"):
        for suffix in (".json", ".samples.jsonl", ".trace.jsonl"):
            assert (cells / f"svamp__{strategy}{suffix}").is_file(), (strategy, suffix)
    assert not list(cells.glob(".*tmp"))  # atomic writes leave no temporary files

    greedy, sr, sc = (json.loads((cells / f"svamp__{s}.json").read_text())
                      for s in ("greedy", "softreason", "sc"))
    for strategy, cell in (("greedy", greedy), ("softreason", sr), ("sc", sc)):
        assert cell["n"] == 1 and cell["questions"] == 1
        # one question: the cell's numbers are its sample's scores and its trace record's counts
        scores = {r["filter"]: r["exact_match"] for r in map(json.loads, (
            cells / f"svamp__{strategy}.samples.jsonl").read_text().splitlines())}
        assert (cell["accuracy_strict"], cell["accuracy_flexible"]) == (
            scores["strict-match"], scores["flexible-extract"])
        (record,) = read_trace(cells / f"svamp__{strategy}.trace.jsonl")
        assert (cell["tokens_generated_per_q"], cell["verifier_tokens_per_q"],
                cell["tokens_prefilled_per_q"]) == (
            record["tokens_generated"], record["verifier_tokens"], record["tokens_prefilled"])
        assert cell["wall_time_per_q_s"] == cell["stats"]["wall_time_s"] > 0
        assert cell["lm_eval_version"] and cell["timestamp"]
        assert "/" not in cell["model_args"]["pretrained"]  # no machine paths in results
    assert greedy["tokens_generated_per_q"] <= 8
    # softreason's count includes its verifier's tokens
    assert sr["verifier_tokens_per_q"] > 0 and greedy["verifier_tokens_per_q"] == 0
    assert sr["tokens_generated_per_q"] >= sr["verifier_tokens_per_q"]

    # Budget matching: N = round(softreason tokens/q / greedy tokens/q), at least 1.
    ratio = sr["tokens_generated_per_q"] / greedy["tokens_generated_per_q"]
    expected_n = max(1, math.floor(ratio + 0.5))
    assert sc["budget"]["source"] == "matched"
    assert sc["budget"]["n_samples"] == expected_n
    assert sc["model_args"]["n_samples"] == expected_n
    assert sc["stats"]["candidates"] == expected_n  # one question, N samples decoded
    assert sc["label"] == f"sc (N={expected_n})"

    # The table: stdout and table.md, one row per cell, in run order.
    table = (out / "table.md").read_text()
    assert table in printed
    rows = [line for line in table.splitlines() if line.startswith("| svamp |")]
    assert [r.split("|")[2].strip() for r in rows] == [
        "greedy", f"sc (N={expected_n})", *[f"sc maj@{k}" for k in range(1, expected_n + 1)],
        "softreason"]  # the sc cell is followed by its maj@k curve
    assert "generated tokens/q" in table.splitlines()[0]
    pytest.importorskip("matplotlib")
    png = out / "accuracy_vs_tokens.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Rerun: every finished cell is skipped; nothing is rewritten and the model is not loaded.
    before = {p.name: p.stat().st_mtime_ns for p in cells.iterdir()}
    assert compare_cli.main(_argv(tiny_model_dir, out)) == 0
    printed = capsys.readouterr().out
    for strategy in ("greedy", "sc", "softreason"):
        assert f"skip svamp / {strategy}" in printed
    assert "loaded " not in printed
    assert {p.name: p.stat().st_mtime_ns for p in cells.iterdir()} == before

    # Report only: table and plot rebuilt from the cells.
    (out / "table.md").unlink()
    png.unlink()
    assert compare_cli.main(["--report-only", "--out", str(out), "--tasks", "svamp"]) == 0
    assert (out / "table.md").read_text() == table
    assert png.is_file()

    # Digests: per question lm-eval's scores under each filter (as in the samples) and, for
    # traced cells, every candidate's answer, tokens and flexible-extract score.
    for strategy in ("greedy", "sc", "softreason"):
        rows = [json.loads(line) for line in
                (cells / f"svamp__{strategy}.samples.jsonl").read_text().splitlines()]
        (question,) = [json.loads(line) for line in
                       (cells / f"svamp__{strategy}.digest.jsonl").read_text().splitlines()]
        assert question["prompt_sha"] == rows[0]["prompt_hash"][:16]
        assert question["scores"] == {r["filter"]: {"exact_match": r["exact_match"]}
                                      for r in rows}
        (record,) = read_trace(cells / f"svamp__{strategy}.trace.jsonl")
        assert [(c["answer"], c["tokens"]) for c in question["candidates"]] == \
            [(c["answer"], c["tokens"]) for c in record["candidates"]]
        chosen = question["candidates"][record["chosen"]]["right"]
        assert chosen == question["scores"]["flexible-extract"]["exact_match"]

    # A committed folder keeps cell files and digests only: the same table, maj@k rows
    # included; a digest lost beside its samples is written again, byte for byte.
    committed = tmp_path / "committed"
    (committed / "cells").mkdir(parents=True)
    for path in [*cells.glob("*.json"), *cells.glob("*.digest.jsonl")]:
        shutil.copy(path, committed / "cells" / path.name)
    assert compare_cli.main(["--report-only", "--out", str(committed), "--tasks", "svamp"]) == 0
    assert (committed / "table.md").read_text() == table
    sc_digest = (cells / "svamp__sc.digest.jsonl").read_bytes()
    (cells / "svamp__sc.digest.jsonl").unlink()
    assert compare_cli.main(["--report-only", "--out", str(out), "--tasks", "svamp"]) == 0
    assert (cells / "svamp__sc.digest.jsonl").read_bytes() == sc_digest

    # Finished cells from other settings are never mixed into a run.
    with pytest.raises(SystemExit, match="other settings"):
        compare_cli.main(_argv(tiny_model_dir, out, "--seed", "1"))


def test_parse_limits():
    tasks = ["svamp", "gsm8k_cot_zeroshot_offline"]
    assert compare_cli.parse_limits(None, tasks)["svamp"] is None
    assert compare_cli.parse_limits("5", tasks)["gsm8k_cot_zeroshot_offline"] == 5
    both = compare_cli.parse_limits("svamp=100,gsm8k_cot_zeroshot_offline=50", tasks)
    assert (both["svamp"], both["gsm8k_cot_zeroshot_offline"]) == (100, 50)
    mixed = compare_cli.parse_limits("7,svamp=100", tasks)
    assert (mixed["svamp"], mixed["gsm8k_cot_zeroshot_offline"]) == (100, 7)
    with pytest.raises(SystemExit):
        compare_cli.parse_limits("gsm8k_offline=3", tasks)
    with pytest.raises(SystemExit):
        compare_cli.parse_limits("svamp=-1", tasks)
    ranged = compare_cli.parse_limits("svamp=500:600,gsm8k_cot_zeroshot_offline=100", tasks)
    assert (ranged["svamp"], ranged["gsm8k_cot_zeroshot_offline"]) == ("500:600", 100)
    for bad in ("svamp=600:500", "svamp=5:5", "svamp=a:9", "svamp=-1:3"):
        with pytest.raises(SystemExit, match="a range is A:B with integers 0 <= A < B"):
            compare_cli.parse_limits(bad, tasks)


def test_a_range_limit_runs_exactly_those_documents(tiny_model_dir, svamp_dir, tmp_path):
    out = tmp_path / "out"
    argv = _argv(tiny_model_dir, out, "--strategies", "greedy")
    argv[argv.index("--limit") + 1] = "svamp=1:3"
    assert compare_cli.main(argv) == 0
    samples = [json.loads(line) for line in
               (out / "cells" / "svamp__greedy.samples.jsonl").read_text().splitlines()]
    # one logged sample per document and filter
    assert sorted((s["doc_id"], s["doc"]["ID"], s["filter"]) for s in samples) == [
        (1, "chal-2", "flexible-extract"), (1, "chal-2", "strict-match"),
        (2, "chal-3", "flexible-extract"), (2, "chal-3", "strict-match")]
    cell = json.loads((out / "cells" / "svamp__greedy.json").read_text())
    assert cell["n"] == 2 and cell["spec"]["limit"] == "1:3"


def test_plan_runs_budget_sources_before_sc():
    plan = compare_plan.plan_cells(["svamp", "gsm8k_cot_zeroshot_offline"],
                              ["sc", "fire", "softreason", "greedy"], baseline_hf_sc=True)
    assert plan[:4] == [("svamp", "greedy"), ("svamp", "softreason"), ("svamp", "fire"),
                        ("svamp", "sc")]
    assert plan[-1] == ("gsm8k_cot_self_consistency_offline", "hf_sc")
    assert len(plan) == 9


def test_sc_match_plans_and_sizes_sc_from_another_strategy(tmp_path):
    plan = compare_plan.plan_cells(["svamp"], ["sc", "softreason", "softreason_reference", "greedy"],
                              baseline_hf_sc=False, sc_match="softreason_reference")
    assert plan == [("svamp", "greedy"), ("svamp", "softreason_reference"),
                    ("svamp", "softreason"), ("svamp", "sc")]
    for name, tokens in (("softreason", 80.0), ("softreason_reference", 40.0),
                         ("greedy", 8.0)):
        folders.write_atomic(folders.cell_paths(tmp_path, "svamp", name)["cell"], json.dumps(
            {"schema": CELL_SCHEMA, "tokens_generated_per_q": tokens}))
    st = _settings(sc_match="softreason_reference")
    assert compare_plan.budget_samples(tmp_path, "svamp", st) == {
        "n_samples": 5, "source": "matched", "softreason_reference_tokens_per_q": 40.0,
        "greedy_tokens_per_q": 8.0, "ratio": 5.0}
    # the default leaves sc's spec as it was; another match is part of it
    assert "sc_match" not in _settings().spec("svamp", "sc")
    assert st.spec("svamp", "sc")["sc_match"] == "softreason_reference"
    assert "sc_match" not in _settings(sc_match="softreason_reference", sc_n=3).spec("svamp", "sc")


@pytest.mark.parametrize("value", ["sc", "greedy", "softreason_tuned_typo"])
def test_sc_match_refuses_what_sc_cannot_be_matched_to(value, tmp_path):
    with pytest.raises(SystemExit) as err:
        compare_cli.main(["--model", "m", "--out", str(tmp_path), "--strategies", "sc",
                      "--sc-match", value])
    assert str(err.value).startswith(f"--sc-match {value!r} is not a strategy sc can be matched "
                                     f"to; allowed: softreason, softreason_noverifier")


def _settings(**kw):
    base = dict(model="models/tiny", limits={"svamp": 1}, seed=1234, apply_chat_template=False,
                batch_size="8", dtype="auto", device="cpu", extra_model_args={}, gen_kwargs={},
                sc_temperature=0.7, sc_n=None, hf_sc_repeats=None)
    return compare_plan.RunSettings(**{**base, **kw})


@pytest.mark.parametrize("sr,greedy,n", [(48.0, 8.0, 6), (52.0, 8.0, 7), (3.0, 8.0, 1),
                                         (100.0, 0.0, 1)])
def test_budget_samples(tmp_path, sr, greedy, n):
    for name, tokens in (("softreason", sr), ("greedy", greedy)):
        folders.write_atomic(folders.cell_paths(tmp_path, "svamp", name)["cell"], json.dumps(
            {"schema": CELL_SCHEMA, "tokens_generated_per_q": tokens}))
    budget = compare_plan.budget_samples(tmp_path, "svamp", _settings())
    assert budget["n_samples"] == n and budget["source"] == "matched"
    fixed = compare_plan.budget_samples(tmp_path, "svamp", _settings(sc_n=3))
    assert fixed == {"n_samples": 3, "source": "--sc-n"}


def test_sc_without_budget_sources_fails_before_loading(tmp_path):
    with pytest.raises(SystemExit, match="--sc-n"):
        compare_cli.main(["--model", str(tmp_path / "no-such-model"), "--tasks", "svamp",
                      "--strategies", "sc", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="unknown strategy"):
        compare_cli.main(["--model", "m", "--strategies", "greedy,beam", "--out", str(tmp_path)])


def test_strategy_model_args():
    st = _settings(extra_model_args={"max_rounds": 2, "mode": "fire"},
                   sc_temperature=0.4)
    assert compare_plan.strategy_model_args("sc", st) == {
        "max_rounds": 2, "mode": "sample", "seed": 1234, "temperature": 0.4}
    assert compare_plan.strategy_model_args("softreason_noverifier", st)["verifier"] == "none"
    assert compare_plan.strategy_model_args("softreason_nocoherence", st)["coherence"] == "none"
    assert compare_plan.strategy_model_args("softreason_random", st)["search"] == "random"
    spec = st.spec("svamp", "greedy")
    assert spec["model"] == "tiny" and spec["limit"] == 1


def test_hf_sc_repeats_override():
    from lm_eval.tasks import TaskManager

    from lm_eval_softreason.tasks_path import tasks_dir

    tm = TaskManager(include_path=tasks_dir(), include_defaults=False)
    names = lambda cfg: [f["name"] for f in cfg["filter_list"]]  # noqa: E731
    four = compare_plan.hf_sc_config(tm, 4)
    assert four["repeats"] == 4 and names(four) == ["score-first", "maj@4"]
    sixteen = compare_plan.hf_sc_config(tm, 16)
    assert names(sixteen) == ["score-first", "maj@16", "maj@8"]


@pytest.mark.slow
def test_baseline_hf_sc_cell(tiny_model_dir, svamp_dir, tmp_path, capsys):
    gsm8k = svamp_dir / "gsm8k"
    gsm8k.mkdir()
    rows = [{"question": f"Ann has {i + 2} pens and buys 3 more. How many pens does she have?",
             "answer": f"{i + 2} + 3 = {i + 5}\n#### {i + 5}"} for i in range(2)]
    for split in ("train", "test"):
        (gsm8k / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["--model", tiny_model_dir, "--tasks", "svamp", "--strategies", "greedy",
            "--limit", "1", "--gen-kwargs", "max_gen_toks=8", "--baseline-hf-sc",
            "--hf-sc-repeats", "2", "--out", str(out)]
    assert compare_cli.main(argv) == 0
    cell_file = out / "cells" / "gsm8k_cot_self_consistency_offline__hf_sc.json"
    cell = json.loads(cell_file.read_text())
    assert cell["repeats"] == 2 and cell["label"] == "hf_sc (N=2)"
    assert "exact_match,maj@2" in cell["metrics"]
    assert cell["accuracy_strict"] == cell["metrics"]["exact_match,maj@2"]
    assert cell["accuracy_flexible"] is None
    assert cell["n"] == 1 and 0 < cell["tokens_generated_per_q"] and cell["wall_time_per_q_s"] > 0
    printed = capsys.readouterr().out
    assert "| gsm8k_cot_self_consistency_offline | hf_sc (N=2) |" in printed
    # its maj@k curve, from the logged samples: k = N reproduces the task's own maj@N
    (strategy, label, points), = compare_report.maj_curves(out, [cell]).values()
    assert (strategy, label, [p.k for p in points]) == ("hf_sc", "hf_sc (N=2)", [1, 2])
    assert points[-1].accuracy == cell["metrics"]["exact_match,maj@2"]
    assert points[-1].tokens == pytest.approx(cell["tokens_generated_per_q"])
    assert "| gsm8k_cot_self_consistency_offline | hf_sc maj@2 |" in printed


def test_table_warns_about_cells_with_fallbacks():
    base = {"task": "svamp", "accuracy_strict": 0.0, "accuracy_flexible": 0.43, "n": 100,
            "questions": 100, "tokens_generated_per_q": 1350.4, "tokens_prefilled_per_q": 656.9,
            "wall_time_per_q_s": 2.2}
    clean = {**base, "strategy": "softreason", "fallbacks": 0, "stats": {"fallback_reasons": {}}}
    broken = {**base, "strategy": "softreason_random", "fallbacks": 73,
              "stats": {"fallback_reasons": {"verifying": 73}}}
    table = compare_report.cells_table([clean, broken])
    assert table.count("**Warning**") == 1
    assert ("svamp / softreason_random: 73 of 100 questions fell back to greedy "
            "(verifying: 73)") in table
    assert "**Warning**" not in compare_report.cells_table([clean])


@pytest.mark.parametrize(("folder", "tasks"), [
    ("qwen0.5b-h100", "svamp,gsm8k_cot_zeroshot,gsm8k_cot_self_consistency"),
    ("qwen0.5b-cpu-svamp40", "svamp"),
])
def test_report_only_rebuilds_the_committed_table(tmp_path, capsys, folder, tasks):
    """The commands in docs/results.md rebuild the committed tables byte for byte."""
    shutil.copytree(RESULTS / folder / "cells", tmp_path / "cells")
    assert compare_cli.main(["--report-only", "--out", str(tmp_path), "--tasks", tasks]) == 0
    committed = (RESULTS / folder / "table.md").read_bytes()
    assert (tmp_path / "table.md").read_bytes() == committed
    assert capsys.readouterr().out == committed.decode()


def test_stored_cells_are_checked_on_settings_that_change_results():
    st = _settings(extra_model_args={"sigma": 0.5})
    spec = st.spec("svamp", "softreason")
    stored = {"spec": {**spec, "model_args": {**spec["model_args"], "bo_workers": 12,
                                              "max_active": 4}}}
    assert compare_plan.check_spec(stored, spec) == []
    other = _settings(extra_model_args={"sigma": 1.0}).spec("svamp", "softreason")
    (diff,) = compare_plan.check_spec(stored, other)
    assert diff.startswith("model_args: stored {") and "'sigma': 0.5" in diff


def test_a_preset_whose_values_changed_no_longer_matches_its_cells(monkeypatch):
    """preset=tuned changed its values under the same name when the tuning study finished: a
    cell searched under the old values is not this run's cell, although its model_args read
    the same. Cells written before specs held ``preset_values`` are checked against the
    settings they ran with; an interrupted cell's progress from then cannot be, so it restarts."""
    from lm_eval_softreason.strategies import config

    st = _settings()
    spec = st.spec("svamp", "softreason_tuned")
    tuned = config.PRESET_VALUES["tuned"]
    assert spec["preset_values"] == {k: spec["preset_values"][k] for k in sorted(tuned)}
    assert spec["preset_values"]["n_init"] == tuned["n_init"]
    ran = config.SoftReasonConfig.from_kwargs(dict(spec["model_args"]))[0].public_dict()
    before = {k: v for k, v in spec.items() if k != "preset_values"}
    finished_before = {"spec": before, "lm_eval_config": {"softreason": ran}}
    assert compare_plan.check_spec({"spec": spec}, spec) == []
    assert compare_plan.check_spec(finished_before, spec) == []

    monkeypatch.setitem(config.PRESET_VALUES, "tuned", {**tuned, "n_init": 3})
    now = st.spec("svamp", "softreason_tuned")
    assert now["model_args"] == spec["model_args"]
    for stored in ({"spec": spec}, finished_before):
        (diff,) = compare_plan.check_spec(stored, now)
        assert diff.startswith("preset_values: stored {") and f"'n_init': {tuned['n_init']}" \
            in diff and diff.endswith("'n_init': 3, 'select': 'vote_coherence_weighted', "
                                      "'sigma': 2.0, 'sigma_scale': 'embedding_std', "
                                      "'verifier': 'none', 'verifier_max_tokens': 256}")
    (diff,) = compare_plan.check_spec({"spec": before}, now)  # a progress file, no resolved settings
    assert diff.startswith("preset_values: stored None, now {")
    assert "preset_values" not in st.spec("svamp", "greedy")
    assert "preset_values" not in st.spec("svamp", "sc")


@pytest.mark.parametrize("command", ["compare", "diagnose", "gate"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lm-eval-softreason {command} ")


def test_sc_cells_get_their_maj_at_k_rows_and_curve(tmp_path):
    from lm_eval_softreason.analysis.curves import CurvePoint

    sc = {"task": "svamp", "strategy": "sc", "label": "sc (N=2)", "accuracy_strict": 0.1,
          "accuracy_flexible": 0.5, "n": 4, "tokens_generated_per_q": 40.0,
          "tokens_prefilled_per_q": 10.0, "wall_time_per_q_s": 1.0}
    greedy = {**sc, "strategy": "greedy", "label": "greedy", "tokens_generated_per_q": 20.0}
    points = [CurvePoint(1, 0.25, 0.25, 20.0), CurvePoint(2, 0.5, 0.2887, 40.0)]
    table = compare_report.cells_table([greedy, sc], {"svamp": ("sc", "sc (N=2)", points)})
    assert table.splitlines()[2:] == [
        "| svamp | greedy | 10.0 | 50.0 | 20.0 | 10.0 | 1.00 | 4 |",
        "| svamp | sc (N=2) | 10.0 | 50.0 | 40.0 | 10.0 | 1.00 | 4 |",
        "| svamp | sc maj@1 | – | 25.0 ± 25.0 | 20.0 | – | – | 4 |",
        "| svamp | sc maj@2 | – | 50.0 ± 28.9 | 40.0 | – | – | 4 |",
    ]
    assert compare_report.cells_table([greedy, sc]) == compare_report.cells_table([greedy, sc], {})
    pytest.importorskip("matplotlib")
    assert compare_plot.plot([greedy, sc], tmp_path / "p.png", {"svamp": ("sc", "sc (N=2)", points)})
    assert (tmp_path / "p.png").stat().st_size > 0


def test_figure_one_colour_per_strategy_stderr_bars_and_a_legend_per_panel():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    from lm_eval_softreason.analysis.curves import CurvePoint

    def cell(task, strategy, acc, se, tokens):
        return {"task": task, "strategy": strategy, "label": f"{strategy} ({task})",
                "accuracy_flexible": acc, "stderr_flexible": se,
                "tokens_generated_per_q": tokens}

    # gsm8k lists its strategies in another order: colours still follow the strategy
    cells = [cell("svamp", "greedy", 0.5, 0.1, 20.0), cell("svamp", "sc", 0.6, 0.05, 80.0),
             cell("svamp", "softreason", 0.55, 0.02, 90.0),
             cell("gsm8k", "softreason", 0.3, 0.04, 300.0), cell("gsm8k", "greedy", 0.2, 0.0, 100.0)]
    curve = [CurvePoint(1, 0.4, 0.1, 40.0), CurvePoint(2, 0.6, 0.05, 80.0)]
    fig = compare_plot.figure(cells, {"svamp": ("sc", "sc (svamp)", curve)})
    svamp, gsm8k = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["svamp", "gsm8k"]
    legend = [t.get_text() for t in svamp.get_legend().get_texts()]
    assert legend == ["sc (svamp) maj@k", "greedy (svamp)", "sc (svamp)", "softreason (svamp)"]
    assert [t.get_text() for t in gsm8k.get_legend().get_texts()] == \
        ["softreason (gsm8k)", "greedy (gsm8k)"]

    def points(ax):  # label -> (colour, x, y, bar low, bar high) of each errorbar point
        found = {}
        for container in ax.containers:
            marker, _, (bars,) = container
            (low, high), = [seg[:, 1] for seg in bars.get_segments()]
            found[container.get_label()] = (to_hex(marker.get_color()), marker.get_xdata()[0],
                                            marker.get_ydata()[0], low, high)
        return found

    s, g = points(svamp), points(gsm8k)
    assert s["greedy (svamp)"][1:] == pytest.approx((20.0, 50.0, 40.0, 60.0))
    assert s["softreason (svamp)"][1:] == pytest.approx((90.0, 55.0, 53.0, 57.0))
    assert g["softreason (gsm8k)"][1:] == pytest.approx((300.0, 30.0, 26.0, 34.0))
    colour = {label.split()[0]: v[0] for label, v in {**s, **g}.items()}
    assert s["greedy (svamp)"][0] == g["greedy (gsm8k)"][0] == colour["greedy"]
    assert s["softreason (svamp)"][0] == g["softreason (gsm8k)"][0]
    assert len(set(colour.values())) == 3
    (line,) = [ln for ln in svamp.get_lines() if ln.get_label() == "sc (svamp) maj@k"]
    assert list(line.get_xdata()) == [40.0, 80.0]
    assert to_hex(line.get_color()) == colour["sc"]  # the maj@k curve wears sc's colour
    plt.close(fig)


# --- resuming inside a cell --------------------------------------------------------------------

CELL_ARGS = {"max_rounds": 1, "n_init": 2, "batch": 2, "verifier_max_tokens": 8}


class Interrupted(Exception):
    """Stands in for a kill in the middle of a cell."""


def _cell_settings(model: str, **kw):
    return _settings(**{"model": model, "limits": {"svamp": 3}, "extra_model_args": CELL_ARGS,
                        "gen_kwargs": {"max_gen_toks": 8}, **kw})


def _interrupt(monkeypatch, st, out: Path, strategy: str, cached: int) -> None:
    """Run a cell that dies when its question ``cached + 1`` finishes: traced, not yet cached
    (the worst moment for a resume)."""
    from lm_eval_softreason.harness.mixin import SoftReasonMixin

    real, streamed = SoftReasonMixin._stream_to_cache, []

    def stream_then_die(self, u, answer):
        if len(streamed) == cached:
            raise Interrupted
        streamed.append(answer)
        real(self, u, answer)

    with monkeypatch.context() as m:
        m.setattr(SoftReasonMixin, "_stream_to_cache", stream_then_die)
        with pytest.raises(Interrupted):
            compare_run.CellRunner(st, out).run_cell("svamp", strategy)
    paths = folders.cell_paths(out, "svamp", strategy)
    assert not paths["cell"].exists() and paths["progress"].is_file()
    assert len(read_trace(paths["trace"])) == cached + 1


def _cell_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "cells").iterdir())


def _decoded(runner) -> dict:
    """The model's own stats: the questions this Runner (process) decoded."""
    return runner.softreason.get_model_info()["softreason_stats"]


def _without_wall(records: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "wall_time_s"} for r in records),
                  key=lambda r: r["question"])


@pytest.mark.slow
def test_an_interrupted_cell_resumes_where_it_stopped(tiny_model_dir, svamp_dir, tmp_path,
                                                      monkeypatch, capsys):
    st = _cell_settings(tiny_model_dir)
    ref_out, out = tmp_path / "uninterrupted", tmp_path / "out"
    ref_runner = compare_run.CellRunner(st, ref_out)
    ref = ref_runner.run_cell("svamp", "softreason")
    # A fresh cell's totals, taken from its trace, are the model's own.
    counted = _decoded(ref_runner)
    assert ref["stats"] == {k: counted[k] for k in ref["stats"]}
    assert ref["questions"] == ref["n"] == 3 and ref["attempts"] == 1
    assert ref["verifier_tokens_per_q"] > 0 and ref["stats"]["rounds"] > 0

    _interrupt(monkeypatch, st, out, "softreason", cached=1)
    capsys.readouterr()
    runner = compare_run.CellRunner(st, out)
    cell = runner.run_cell("svamp", "softreason")
    assert "resume svamp / softreason: 2 questions already done (attempt 2)" in \
        capsys.readouterr().out
    # Question 1 came from the cache; 2 (traced, not cached) and 3 were decoded.
    assert _decoded(runner)["questions"] == 2
    assert cell["questions"] == cell["n"] == 3 and cell["attempts"] == 2
    for key in ("accuracy_strict", "accuracy_flexible", "tokens_generated_per_q",
                "verifier_tokens_per_q", "tokens_prefilled_per_q", "fallbacks"):
        assert cell[key] == ref[key], key
    assert {k: v for k, v in cell["stats"].items() if k != "wall_time_s"} == \
        {k: v for k, v in ref["stats"].items() if k != "wall_time_s"}
    # The killed attempt's time (start to its last trace line) is counted too.
    assert cell["stats"]["wall_time_s"] > _decoded(runner)["wall_time_s"] > 0
    assert cell["wall_time_per_q_s"] == cell["stats"]["wall_time_s"] / 3
    stem = "svamp__softreason"
    for suffix in (".samples.jsonl", ".trace.jsonl"):
        assert (out / "cells" / f"{stem}{suffix}").is_file()
    assert (out / "cells" / f"{stem}.samples.jsonl").read_text() == \
        (ref_out / "cells" / f"{stem}.samples.jsonl").read_text()
    assert _without_wall(read_trace(out / "cells" / f"{stem}.trace.jsonl")) == \
        _without_wall(read_trace(ref_out / "cells" / f"{stem}.trace.jsonl"))
    # Finished: no cache, no progress file, in either folder.
    files = [f"{stem}.digest.jsonl", f"{stem}.json", f"{stem}.samples.jsonl",
             f"{stem}.trace.jsonl"]
    assert _cell_files(out) == _cell_files(ref_out) == files
    assert (out / "cells" / files[0]).read_text() == (ref_out / "cells" / files[0]).read_text()


@pytest.mark.slow
def test_a_changed_spec_discards_an_interrupted_cell(tiny_model_dir, svamp_dir, tmp_path,
                                                     monkeypatch, capsys):
    out = tmp_path / "out"
    _interrupt(monkeypatch, _cell_settings(tiny_model_dir), out, "greedy", cached=1)
    capsys.readouterr()
    runner = compare_run.CellRunner(_cell_settings(tiny_model_dir, seed=99), out)
    cell = runner.run_cell("svamp", "greedy")
    assert "resume" not in capsys.readouterr().out
    assert _decoded(runner)["questions"] == 3  # nothing served from the stale cache
    assert cell["questions"] == cell["n"] == 3 and cell["attempts"] == 1
    records = read_trace(out / "cells" / "svamp__greedy.trace.jsonl")
    assert {r["config"] for r in records} == {runner.softreason.sr_config.fingerprint()}
    assert len(records) == 3
    assert _cell_files(out) == [f"svamp__greedy{s}" for s in
                                (".digest.jsonl", ".json", ".samples.jsonl", ".trace.jsonl")]


def test_a_question_that_cannot_run_is_counted_without_a_trace_record(
        tiny_model_dir, svamp_dir, tmp_path, monkeypatch):
    from lm_eval_softreason.engines.hf import HFEngine

    real = HFEngine.prefill_many

    def refuse_doc_1(self, prompts, prefix=None):
        if any("Tom has 4 apples" in self.tokenizer.decode(ids) for ids in prompts):
            raise RuntimeError("out of memory")
        return real(self, prompts, prefix)

    monkeypatch.setattr(HFEngine, "prefill_many", refuse_doc_1)
    runner = compare_run.CellRunner(_cell_settings(tiny_model_dir, limits={"svamp": 2}), tmp_path)
    cell = runner.run_cell("svamp", "greedy")
    assert len(read_trace(tmp_path / "cells" / "svamp__greedy.trace.jsonl")) == 1
    counted = _decoded(runner)
    assert cell["stats"] == {k: counted[k] for k in cell["stats"]}
    assert cell["fallbacks"] == 1 and cell["questions"] == 1 and cell["n"] == 2
    assert cell["stats"]["fallback_reasons"] == {compare_run.UNTRACED_FALLBACK: 1}
    # the digest keeps both questions' scores; only the traced one has candidates
    digest = [json.loads(line) for line in
              (tmp_path / "cells" / "svamp__greedy.digest.jsonl").read_text().splitlines()]
    assert [d["doc_id"] for d in digest] == [0, 1]
    assert ["candidates" in d for d in digest] == [True, False]
    assert all(set(d["scores"]) == {"strict-match", "flexible-extract"} for d in digest)
    assert not list((tmp_path / "cells").glob("*.cache*"))
    assert not list((tmp_path / "cells").glob("*.progress.json"))


def test_git_keeps_what_holds_the_documents_out_of_committed_folders():
    """tuning.sh and report.sh write into docs/results/, committed with `git add`: samples,
    traces, caches and progress files (prompts, so documents) are ignored; cells, digests and
    tables are not."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    cells = "docs/results/report/svamp/cells/svamp__sc"
    names = {f"{cells}{suffix}": ignored for suffix, ignored in (
        (".samples.jsonl", True), (".trace.jsonl", True), (".cache_rank0.db", True),
        (".cache_rank0.db-journal", True), (".progress.json", True), (".json", False),
        (".digest.jsonl", False))}
    names["docs/results/report/svamp/table.md"] = False
    done = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT,
                          input="\n".join(names), capture_output=True, text=True)
    assert set(done.stdout.split()) == {name for name, ignored in names.items() if ignored}
