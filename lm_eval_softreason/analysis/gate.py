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
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from lm_eval_softreason.analysis.report import render_table
from lm_eval_softreason.settings import result_args, without_path_args

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_ERROR = 2
EXIT_CONFIG_MISMATCH = 3

# config fields that decide what a score means; compared before any score is.
CONFIG_FIELDS = (
    "model", "model_args", "model_revision", "model_dtype", "model_sha", "limit", "gen_kwargs",
    "random_seed", "numpy_seed", "torch_seed", "fewshot_seed", "softreason",
)
DICT_CONFIG_FIELDS = ("model_args", "gen_kwargs", "softreason")
# Compared only when both files know it: lm-eval writes model_sha "" when the Hub is offline.
BOTH_OR_NEITHER_FIELDS = ("model_sha",)
# Per-task sections compared for every task present in both files.
TASK_SECTIONS = ("versions", "n-shot", "n-samples")
# What --update keeps: everything the gate reads, nothing run-specific.
BASELINE_SECTIONS = ("results", "higher_is_better", "versions", "n-shot", "n-samples", "config")
# config entries dropped by --update: a local cache path and auto-detected batch sizes.
VOLATILE_CONFIG = frozenset({"use_cache", "batch_sizes"})


class GateError(Exception):
    """Unusable input (file, JSON, option); reported on stderr with exit code 2."""


class _Absent:
    """Marks a field one file has and the other lacks, so the diff can say so."""


ABSENT = _Absent()


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


# ---------------------------------------------------------------------------------- loading


def find_results_file(path: Path, role: str) -> Path:
    """``path`` itself if a file, else the newest ``results_*.json`` below the directory."""
    if path.is_file():
        return path
    if not path.exists():
        raise GateError(f"{role} file not found: {path}")
    if not path.is_dir():
        raise GateError(f"{role} path is neither a file nor a directory: {path}")
    candidates = [p for p in path.rglob("results_*.json") if p.is_file()]
    if not candidates:
        raise GateError(f"no results_*.json found under {role} directory {path} "
                        f"(lm-eval writes <output_path>/<model>/results_<timestamp>.json)")
    return max(candidates, key=lambda p: (_written_at(p), str(p)))


def _written_at(path: Path) -> float:
    """When lm-eval wrote the file, from the timestamp in its name (copies keep it, unlike mtime).

    lm-eval names files ``results_<datetime.isoformat() with ':' as '-'>.json``.
    """
    stamp = path.stem.removeprefix("results_")
    date, _, time = stamp.partition("T")
    try:
        return datetime.fromisoformat(f"{date}T{time.replace('-', ':')}").timestamp()
    except ValueError:
        return path.stat().st_mtime


def load_results(path: Path, role: str) -> tuple[Path, dict[str, Any]]:
    """Read and shape-check a results JSON; returns the file actually read and its content."""
    file = find_results_file(path, role)
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise GateError(f"cannot read {role} file {file}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise GateError(f"{role} file {file} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), dict):
        raise GateError(f"{role} file {file} is not an lm-eval results JSON: "
                        f"expected an object with a 'results' object")
    for task, metrics in doc["results"].items():
        if not isinstance(metrics, dict):
            raise GateError(f"{role} file {file}: results[{task!r}] must be an object, "
                            f"got {type(metrics).__name__}")
    for name in BASELINE_SECTIONS[1:]:
        if name in doc and not isinstance(doc[name], (dict, type(None))):
            raise GateError(f"{role} file {file}: {name!r} must be an object, "
                            f"got {type(doc[name]).__name__}")
    return file, doc


def _section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc.get(name) or {}


# ------------------------------------------------------------------------------ config diff


def config_differences(baseline: dict[str, Any],
                       results: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(field, baseline value, results value)`` for every setting that differs.

    Only settings that change scores count (CONFIG_FIELDS; in their args, everything but
    ``settings.RUN_ONLY_ARGS``); per-task sections are compared for tasks present in both
    files (a missing task is a MISSING row).
    """
    diffs: list[tuple[str, Any, Any]] = []
    base_cfg = _comparable_config(baseline, "baseline")
    now_cfg = _comparable_config(results, "results")
    for name in CONFIG_FIELDS:
        old, new = base_cfg.get(name, ABSENT), now_cfg.get(name, ABSENT)
        if name in BOTH_OR_NEITHER_FIELDS and ABSENT in (old, new):
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(old.keys() | new.keys()):
                before, after = old.get(key, ABSENT), new.get(key, ABSENT)
                if before != after:
                    diffs.append((f"config.{name}.{key}", before, after))
        elif old != new:
            diffs.append((f"config.{name}", old, new))
    shared = sorted(baseline["results"].keys() & results["results"].keys())
    for section in TASK_SECTIONS:
        old_sec, new_sec = _section(baseline, section), _section(results, section)
        for task in shared:
            old, new = old_sec.get(task, ABSENT), new_sec.get(task, ABSENT)
            if old != new:
                diffs.append((f"{section}[{task}]", old, new))
    return diffs


def _comparable_config(doc: dict[str, Any], role: str) -> dict[str, Any]:
    """The score-relevant config fields, normalised so equal settings compare equal."""
    cfg = _section(doc, "config")
    out = {name: cfg[name] for name in CONFIG_FIELDS if name in cfg}
    for name in DICT_CONFIG_FIELDS:
        if name in out:
            parsed = _args_dict(out[name], f"{role} config.{name}")
            out[name] = result_args(parsed)
    for name in BOTH_OR_NEITHER_FIELDS:
        if not out.get(name):
            out.pop(name, None)
    return out


def _args_dict(value: Any, where: str) -> dict[str, Any]:
    """``key=value,...`` strings and dicts to one typed form, parsed the way lm-eval parses them."""
    from lm_eval.utils import handle_arg_string, simple_parse_args_string

    if value is None:
        return {}
    if isinstance(value, str):
        return simple_parse_args_string(value)
    if isinstance(value, dict):
        return {k: handle_arg_string(v) if isinstance(v, str) else v for k, v in value.items()}
    raise GateError(f"{where} must be a 'key=value,...' string or an object, got {value!r}")


def _show(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    return json.dumps(value, sort_keys=True, default=str)


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
        flag = (_section(doc, "higher_is_better").get(task) or {}).get(metric)
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
        lines = "\n".join(f"  - {name}: baseline {_show(old)}, results {_show(new)}"
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
