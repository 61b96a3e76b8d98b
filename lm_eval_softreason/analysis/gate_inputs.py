"""The gate's inputs: lm-eval results JSONs found, read and shape-checked, and the settings
two of them were run under compared (only those that change scores)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from lm_eval_softreason.strategies.config import result_args

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


class GateError(Exception):
    """Unusable input (file, JSON, option); reported on stderr with exit code 2."""


class _Absent:
    """Marks a field one file has and the other lacks, so the diff can say so."""


ABSENT = _Absent()


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


def section(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """A top-level section of a results JSON, ``{}`` where absent or null."""
    return doc.get(name) or {}


# ------------------------------------------------------------------------------ config diff


def config_differences(baseline: dict[str, Any],
                       results: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(field, baseline value, results value)`` for every setting that differs.

    Only settings that change scores count (CONFIG_FIELDS; in their args, everything but
    ``strategies.config.RUN_ONLY_ARGS``); per-task sections are compared for tasks present in
    both files (a missing task is a MISSING row).
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
    for part in TASK_SECTIONS:
        old_sec, new_sec = section(baseline, part), section(results, part)
        for task in shared:
            old, new = old_sec.get(task, ABSENT), new_sec.get(task, ABSENT)
            if old != new:
                diffs.append((f"{part}[{task}]", old, new))
    return diffs


def _comparable_config(doc: dict[str, Any], role: str) -> dict[str, Any]:
    """The score-relevant config fields, normalised so equal settings compare equal."""
    cfg = section(doc, "config")
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


def show(value: Any) -> str:
    """A config value as the mismatch message prints it."""
    if value is ABSENT:
        return "(absent)"
    return json.dumps(value, sort_keys=True, default=str)
