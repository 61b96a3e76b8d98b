"""Which settings change results, and the records that carry them: one definition for the
model (``--use_cache`` guard, trace fingerprint), ``gate`` and ``compare``.

A setting either changes what a run answers (the strategy's settings, model, dtype, limit,
seeds, gen_kwargs) or only how the run goes: speed, memory, where files go. Only the second
kind is listed here; anything not listed counts as changing results, so a new setting is
compared until someone decides it need not be.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# model_args (ours, then lm-eval's and HFLM's) that change how a run executes, never its answers.
RUN_ONLY_ARGS = frozenset({
    "trace_path", "num_threads", "bo_workers", "max_active", "max_fallback_rate",
    "batch_size", "max_batch_size", "device", "device_map", "parallelize", "max_memory_per_gpu",
    "max_cpu_memory", "offload_folder", "trust_remote_code", "output_path", "cache_dir",
})
# The machine-specific ones: never in anything meant to be committed.
PATH_ARGS = frozenset({"trace_path", "output_path", "cache_dir", "offload_folder"})

# The --use_cache database entry holding the settings and model identity it was written under
# (the model's cache guard; the console script's refusal to hand it to another model).
CACHE_CONFIG_KEY = "__lm_eval_softreason_config__"

# Version of compare's cell files (``cells/<task>__<strategy>.json``); other versions are ignored.
CELL_SCHEMA = 1
# Keys of a cell's ``spec`` holding model_args, compared without RUN_ONLY_ARGS.
SPEC_ARGS_KEYS = ("model_args", "extra_model_args")


def result_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` without RUN_ONLY_ARGS: what two runs must share to give the same answers."""
    return {k: v for k, v in args.items() if k not in RUN_ONLY_ARGS}


def fingerprint(settings: Mapping[str, Any]) -> str:
    """Short stable hash of settings (names questions in traces and seeds their search)."""
    blob = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def without_path_args(value: Any) -> Any:
    """model_args (a ``key=value,...`` string or a dict) minus PATH_ARGS, in the same form."""
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in PATH_ARGS}
    if isinstance(value, str):
        return ",".join(part for part in value.split(",")
                        if part.partition("=")[0].strip() not in PATH_ARGS)
    return value


def comparable_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A cell's ``spec`` as compared: JSON values, model_args without RUN_ONLY_ARGS (cells
    written before a setting was known to be run-only still match)."""
    out = json.loads(json.dumps(dict(spec), default=str))
    for key in SPEC_ARGS_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = result_args(out[key])
    return out


def cell_stem(task: str, strategy: str) -> str:
    """File name stem of a (task, strategy) cell in a compare results folder."""
    return f"{task}__{strategy}"


def prompt_sha(prompt: str) -> str:
    """A trace record's ``prompt_sha``: the first 16 hex of sha256(prompt), which is also the
    start of lm-eval's per-sample ``prompt_hash`` (how diagnose joins the two)."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]
