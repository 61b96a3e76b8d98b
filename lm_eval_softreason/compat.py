"""Every use of a dependency's internals or version-specific API, in one place.

When transformers or lm-eval change one of these, this module is the one to fix:

* transformers: a ``DynamicCache`` built from per-layer tensors and read back per layer
  (``ddp_cache_data=``, ``config=``, ``.layers``), row selection (``batch_select_indices``),
  and the name of ``forward``'s cache argument: ``cache`` where the model takes it,
  ``past_key_values`` (deprecated by 5.x, removed in 5.40) before that; the ``embed_scale``
  that scaled embedding modules (Gemma 3's) multiply looked-up rows by;
* lm-eval 0.4: the task index's entry kinds (``lm_eval.tasks._index``) and its YAML loader
  (``lm_eval.tasks._yaml_loader``), both private modules.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

KV = list[tuple[torch.Tensor, torch.Tensor]]
# lm-eval index entry kinds that are single tasks (the others are groups and tags).
TASK_KINDS = ("task", "py_task")


# ------------------------------------------------------------------------------ transformers


def consumed_embeddings(model: PreTrainedModel) -> torch.Tensor:
    """The input embedding table as the model consumes it, ``[vocab, hidden]``: the rows that
    ``get_input_embeddings()(ids)`` returns. Scaled embedding modules (Gemma 3's) multiply the
    stored weight by ``embed_scale`` on lookup; the plain table is returned without a copy."""
    module = model.get_input_embeddings()
    table = module.weight.detach()
    scale = getattr(module, "embed_scale", None)
    return table if scale is None else table * torch.as_tensor(scale, dtype=table.dtype)


def new_cache(model: PreTrainedModel, layers: KV | None = None) -> DynamicCache:
    """A KV cache for ``model``, empty or holding ``layers`` (keys, values per layer)."""
    if layers is None:
        return DynamicCache(config=model.config)
    return DynamicCache(ddp_cache_data=layers, config=model.config)


def cache_layers(cache: DynamicCache) -> KV:
    """The cache's keys and values per layer (each ``[batch, heads, length, head_dim]``)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def keep_rows(cache: DynamicCache, index: torch.Tensor) -> None:
    """Keep only the batch rows ``index`` of the cache, in place."""
    cache.batch_select_indices(index)


def cache_arg(model: PreTrainedModel, cache: DynamicCache) -> dict[str, DynamicCache]:
    """``forward``'s keyword argument for ``cache``: ``cache=`` where the model takes it,
    else ``past_key_values=``."""
    return {_cache_kwarg(type(model)): cache}


@functools.cache
def _cache_kwarg(model_class: type) -> str:
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# ------------------------------------------------------------------------------------ lm-eval


def load_task_yaml(path: str | Path) -> dict[str, Any]:
    """A task YAML with its includes merged and ``!function`` references imported."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return dict(load_yaml(path, resolve_func=True))


def entry_kind(entry: Any) -> str:
    """The kind of a ``TaskManager.task_index`` entry: task, py_task, group, tag or unknown."""
    return entry.kind.name.lower()


def entry_config(entry: Any) -> dict[str, Any]:
    """The full config of a ``TaskManager.task_index`` task entry."""
    if entry.yaml_path is not None:
        return load_task_yaml(entry.yaml_path)
    return dict(entry.cfg or {})
