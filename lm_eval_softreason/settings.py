"""Which settings change results, and the records that carry them.

A setting either changes what a run answers (the strategy's settings, model, dtype, limit,
seeds, gen_kwargs) or only how the run goes: speed, memory, where files go. Our own settings
say which in their field metadata (``strategies/config.py``, ``settings_affecting``); lm-eval's
and HFLM's model_args of the second kind are listed here. Anything not listed counts as
changing results, so a new setting is compared until someone decides it need not be.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# lm-eval's and HFLM's model_args that change how a run executes, never its answers (ours are
# marked on their fields: strategies/config.py's RUN_ONLY_ARGS joins the two).
HARNESS_RUN_ONLY_ARGS = frozenset({
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


def cell_stem(task: str, strategy: str) -> str:
    """File name stem of a (task, strategy) cell in a compare results folder."""
    return f"{task}__{strategy}"


def prompt_sha(prompt: str) -> str:
    """A trace record's ``prompt_sha``: the first 16 hex of sha256(prompt), which is also the
    start of lm-eval's per-sample ``prompt_hash`` (how diagnose joins the two)."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]
