"""``lm-eval-softreason gate``: fail CI when scores drop below a committed baseline.

Both inputs are lm-eval results JSONs (what ``--output_path`` writes), or a baseline this
command wrote with ``--update``. Exit codes: 0 pass, 1 regression (a metric dropped by more
than the tolerance, or a baseline metric is missing), 2 bad input, 3 the two runs used
different settings and are not comparable. See docs/gate.md for the rules in full.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lm_eval_softreason.analysis.gate_inputs import (
    BASELINE_SECTIONS,
    GateError,
    config_differences,
    load_results,
    section,
    show,
)
from lm_eval_softreason.analysis.report import render_table
from lm_eval_softreason.settings import without_path_args

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_ERROR = 2
EXIT_CONFIG_MISMATCH = 3

# config entries dropped by --update: a local cache path and auto-detected batch sizes.
VOLATILE_CONFIG = frozenset({"use_cache", "batch_sizes"})


@dataclass(frozen=True)
class Row:
    """One compared task/metric; ``verdict`` is OK, DROP, MISSING or NEW."""

    task: str
    metric: str
    baseline: float | None
    now: float | None
    verdict: str
    higher_is_better: bool


def main(argv: list[str]) -> int:
    """Run the gate; the return value is the process exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        if args.update:
            return update_baseline(args.results, args.baseline)
        return run_gate(args.results, args.baseline, args.tolerance, args.metric or [],
                        args.allow_config_mismatch)
    except GateError as exc:
        print(f"lm-eval-softreason gate: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lm-eval-softreason gate",
        description="Compare lm-eval results with a baseline; exit 1 on a regression.",
        epilog="exit codes: 0 pass, 1 regression, 2 bad input, 3 config mismatch",
    )
    parser.add_argument("results", type=Path, metavar="RESULTS",
                        help="results_*.json, or a directory (the newest results_*.json in it)")
    parser.add_argument("--baseline", type=Path, required=True, metavar="BASELINE",
                        help="baseline JSON (or directory); with --update, the file to write")
    parser.add_argument("--tolerance", type=_tolerance, default=0.02, metavar="T",
                        help="largest allowed drop, in metric units (default: 0.02)")
    parser.add_argument("--metric", action="append", metavar="SELECTION",
                        help="comma-separated metric and/or filter names, e.g. "
                             "exact_match,flexible-extract; repeat to add more (default: all)")
    parser.add_argument("--allow-config-mismatch", action="store_true",
                        help="compare even when the runs' settings differ (warns)")
    parser.add_argument("--update", action="store_true",
                        help="write RESULTS (stripped) to BASELINE instead of comparing")
    return parser


def _tolerance(text: str) -> float:
    """argparse type: a finite, non-negative absolute tolerance."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a finite number >= 0 (an absolute difference, e.g. 0.02), got {text!r}")
    return value


# ------------------------------------------------------------------------------- comparison


def metric_values(task_results: dict[str, Any]) -> dict[str, Any]:
    """The gateable entries of ``results[task]``: ``metric,filter`` keys, minus ``_stderr`` ones.

    Fixed keys (``alias``, ``name``, ``sample_len``) have no comma and are skipped.
    """
    return {
        key: value for key, value in task_results.items()
        if "," in key and not key.partition(",")[0].endswith("_stderr")
        and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def build_selector(selections: list[str], baseline: dict[str, Any],
                   where: Path) -> Callable[[str], bool]:
    """Turn ``--metric`` values into a predicate on ``metric,filter`` keys.

    Within one value, names are sorted into metric names and filter names (by what the
    baseline contains; a name that is both counts as a metric), and a key is selected when
    its metric is among the metric names (or none were given) AND its filter among the
    filter names (or none were given). So ``exact_match,flexible-extract`` is exactly that
    key, ``exact_match`` every filter of it. Repeated ``--metric`` values add up.
    """
    keys = sorted({k for m in baseline["results"].values() for k in metric_values(m)})
    if not keys:
        raise GateError(f"baseline {where} has no numeric metrics to gate")
    if not selections:
        return lambda key: True
    metric_names = {k.partition(",")[0] for k in keys}
    filter_names = {k.partition(",")[2] for k in keys}
    rules: list[tuple[set[str], set[str]]] = []
    for selection in selections:
        metrics: set[str] = set()
        filters: set[str] = set()
        for name in (part.strip() for part in selection.split(",")):
            if name in metric_names:
                metrics.add(name)
            elif name in filter_names:
                filters.add(name)
            else:
                raise GateError(
                    f"--metric {selection!r}: {name!r} is neither a metric nor a filter in "
                    f"baseline {where}; metrics: {', '.join(sorted(metric_names))}; "
                    f"filters: {', '.join(sorted(filter_names))}")
        if not any(_rule_matches(metrics, filters, k) for k in keys):
            raise GateError(f"--metric {selection!r} selects nothing in baseline {where}; "
                            f"its metrics: {', '.join(keys)}")
        rules.append((metrics, filters))
    return lambda key: any(_rule_matches(m, f, key) for m, f in rules)


def _rule_matches(metrics: set[str], filters: set[str], key: str) -> bool:
    metric, _, filt = key.partition(",")
    return (not metrics or metric in metrics) and (not filters or filt in filters)


def compare(baseline: dict[str, Any], results: dict[str, Any], selected: Callable[[str], bool],
            tolerance: float) -> list[Row]:
    """One row per selected task/metric in either file, sorted by task and metric."""
    rows: list[Row] = []
    base_res, now_res = baseline["results"], results["results"]
    for task in sorted(base_res.keys() | now_res.keys()):
        old = metric_values(base_res.get(task, {}))
        new = metric_values(now_res.get(task, {}))
        for key in sorted(old.keys() | new.keys()):
            if not selected(key):
                continue
            higher = _higher_is_better(task, key, results, baseline)
            verdict = _verdict(old.get(key), new.get(key), higher, tolerance)
            rows.append(Row(task, key, old.get(key), new.get(key), verdict, higher))
    return rows


def _higher_is_better(task: str, key: str, *docs: dict[str, Any]) -> bool:
    """Direction from the files' ``higher_is_better`` (results first); unknown means higher."""
    metric = key.partition(",")[0]
    for doc in docs:
        flag = (section(doc, "higher_is_better").get(task) or {}).get(metric)
        if flag is not None:
            return bool(flag)
    return True


def _verdict(old: float | None, new: float | None, higher: bool, tolerance: float) -> str:
    if old is None or not math.isfinite(old):
        return "NEW"  # nothing (usable) in the baseline to hold the result to
    if new is None:
        return "MISSING"
    if not math.isfinite(new):
        return "DROP"  # a NaN score cannot be shown to hold up
    drop = old - new if higher else new - old
    beyond = drop > tolerance and not math.isclose(drop, tolerance, rel_tol=1e-9, abs_tol=1e-12)
    return "DROP" if beyond else "OK"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(row: Row) -> str:
    old, new = row.baseline, row.now
    if old is None or new is None or not (math.isfinite(old) and math.isfinite(new)):
        return "-"
    return f"{new - old:+.4f}"


# ------------------------------------------------------------------------------- commands


def run_gate(results_path: Path, baseline_path: Path, tolerance: float, selections: list[str],
             allow_config_mismatch: bool) -> int:
    """Compare and print; returns the exit code."""
    base_file, baseline = load_results(baseline_path, "baseline")
    now_file, results = load_results(results_path, "results")
    selected = build_selector(selections, baseline, base_file)
    print(f"Regression gate: {now_file} vs baseline {base_file} (tolerance {tolerance:g})")

    diffs = config_differences(baseline, results)
    if diffs:
        lines = "\n".join(f"  - {name}: baseline {show(old)}, results {show(new)}"
                          for name, old, new in diffs)
        if not allow_config_mismatch:
            print("CONFIG MISMATCH: these runs used different settings, so their scores are "
                  "not comparable. Rerun with the baseline's settings, refresh the baseline "
                  f"with --update, or pass --allow-config-mismatch.\n{lines}")
            return EXIT_CONFIG_MISMATCH
        print(f"WARNING: config mismatch, comparing anyway (--allow-config-mismatch):\n{lines}")

    rows = compare(baseline, results, selected, tolerance)
    print()
    print(render_table(
        ["task", "metric", "baseline", "now", "delta", "verdict"],
        [[r.task, r.metric if r.higher_is_better else f"{r.metric} (lower is better)",
          _number(r.baseline), _number(r.now), _delta(r), r.verdict] for r in rows],
        numeric={2, 3, 4},
    ))
    print()
    counts = {v: sum(r.verdict == v for r in rows) for v in ("OK", "DROP", "MISSING", "NEW")}
    if counts["DROP"] or counts["MISSING"]:
        print(f"FAIL: {counts['DROP']} dropped by more than {tolerance:g}, "
              f"{counts['MISSING']} missing from the results ({counts['OK']} OK, "
              f"{counts['NEW']} new).")
        return EXIT_REGRESSION
    print(f"PASS: {counts['OK']} within {tolerance:g} of the baseline or better "
          f"({counts['NEW']} new).")
    return EXIT_OK


def strip_for_baseline(results: dict[str, Any]) -> dict[str, Any]:
    """The parts of a results JSON worth committing: scores and the settings behind them.

    Drops samples, task YAML configs, environment dumps, git hashes, dates and paths, so the
    file is small, diffs cleanly and holds nothing machine-specific that the gate does not use.
    """
    out = {name: results[name] for name in BASELINE_SECTIONS if results.get(name) is not None}
    if "config" in out:
        config = {k: v for k, v in out["config"].items() if k not in VOLATILE_CONFIG}
        for name in ("model_args", "softreason"):
            if name in config:
                config[name] = without_path_args(config[name])
        out["config"] = config
    return out


def update_baseline(results_path: Path, baseline_path: Path) -> int:
    """Write RESULTS, stripped, as the new baseline and show what it holds."""
    now_file, results = load_results(results_path, "results")
    if baseline_path.is_dir():
        raise GateError(f"--update needs a file path for --baseline, got directory {baseline_path}")
    stripped = strip_for_baseline(results)
    try:
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        baseline_path.write_text(json.dumps(stripped, indent=2, ensure_ascii=False) + "\n",
                                 encoding="utf-8")
    except OSError as exc:
        raise GateError(f"cannot write baseline {baseline_path}: {exc}") from None
    rows = [[task, key, _number(value)]
            for task, metrics in sorted(stripped["results"].items())
            for key, value in sorted(metric_values(metrics).items())]
    print(f"Wrote baseline {baseline_path} from {now_file} "
          f"(sections: {', '.join(stripped)}):\n")
    print(render_table(["task", "metric", "value"], rows, numeric={2}) if rows
          else "(no numeric metrics)")
    return EXIT_OK
