"""What a finished compare cell records, from its trace and lm-eval's results."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from lm_eval_softreason.strategies.fallback import recorded_stage


def trace_stats(records: list[dict[str, Any]], wall_time_s: float) -> dict[str, Any]:
    """A cell's totals from its trace records, which hold every question once whichever
    attempt decoded it (the model's own stats count only the current attempt's questions),
    and the wall time of all its attempts."""
    reasons = Counter(recorded_stage(r["fallback"]) for r in records if r["fallback"] is not None)
    return {
        "questions": len(records),
        "fallbacks": sum(reasons.values()),
        "rounds": sum(r["rounds"] for r in records),
        "candidates": sum(len(r["candidates"]) for r in records),
        "tokens_generated": sum(r["tokens_generated"] for r in records),
        "tokens_prefilled": sum(r["tokens_prefilled"] for r in records),
        "verifier_tokens": sum(r["verifier_tokens"] for r in records),
        "wall_time_s": wall_time_s,
        "fallback_reasons": dict(reasons),
    }


def per_question(stats: dict[str, Any], questions: int) -> dict[str, float | None]:
    """A cell's per-question means of its totals."""
    def mean(key: str) -> float | None:
        return stats.get(key, 0) / questions if questions else None

    return {
        "questions": questions,
        # tokens_generated already counts the verifier's tokens (a subset: verifier_tokens).
        "tokens_generated_per_q": mean("tokens_generated"),
        "verifier_tokens_per_q": mean("verifier_tokens"),
        "tokens_prefilled_per_q": mean("tokens_prefilled"),
        "wall_time_per_q_s": mean("wall_time_s"),
        "fallbacks": stats.get("fallbacks", 0),
    }


def metric(task_results: dict, filter_name: str | None, stderr: bool = False) -> float | None:
    """A task's exact-match score (or its stderr) under one filter, or the first metric of
    that filter for a task scored otherwise."""
    if filter_name is None:
        return None
    metric = "exact_match_stderr" if stderr else "exact_match"
    value = task_results.get(f"{metric},{filter_name}")
    if value is None:  # a task scored by another metric: take the first one of this filter
        for key, v in task_results.items():
            name, _, filt = key.partition(",")
            if filt == filter_name and name.endswith("_stderr") == stderr:
                value = v
                break
    return float(value) if isinstance(value, (int, float)) else None


def sample_responses(sample: dict) -> list[str]:
    """Every response text of a sample."""
    out: list[str] = []
    for r in sample.get("resps", []):
        if isinstance(r, str):
            out.append(r)
        elif isinstance(r, (list, tuple)):
            out.extend(x for x in r if isinstance(x, str))
    return out


def config_without_paths(config: dict) -> dict:
    """lm-eval's config section with the absolute model path it records cut to the folder
    name and the cache prefix made relative to the results folder."""
    config = dict(config)
    for key in ("model", "pretrained"):
        if isinstance(config.get(key), str) and os.path.isabs(config[key]):
            config[key] = Path(config[key]).name
    if isinstance(config.get("use_cache"), str):
        config["use_cache"] = f"cells/{Path(config['use_cache']).name}"
    return config


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (``str`` for what JSON cannot hold)."""
    return json.loads(json.dumps(value, default=str))
