"""Every use of a dependency's internals or version-specific API, in one place.

When transformers, lm-eval or vLLM change one of them, this module is the one to fix
(docs/architecture.md, "Dependency internals", lists what is used and why).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and transformers load only when a function needs them: the task
    import torch  # hook below runs in every lm-eval CLI process, most of which never use them
    from transformers import DynamicCache, PreTrainedModel

KV = list[tuple["torch.Tensor", "torch.Tensor"]]
# lm-eval index entry kinds that are single tasks (the others are groups and tags).
TASK_KINDS = ("task", "py_task")


def hflm_model(lm: Any) -> PreTrainedModel:
    """The model an lm-eval ``HFLM`` loaded, as it holds it (``_model``)."""
    return lm._model


def shutdown_vllm(llm: Any) -> None:
    """Shut a vLLM ``LLM``'s engine-core process down now instead of at interpreter exit."""
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


# ------------------------------------------------------------------------------ transformers


def consumed_embeddings(model: PreTrainedModel) -> torch.Tensor:
    """The input embedding table as the model consumes it, ``[vocab, hidden]``: the rows that
    ``get_input_embeddings()(ids)`` returns. Scaled embedding modules (Gemma 3's) multiply the
    stored weight by ``embed_scale`` on lookup; the plain table is returned without a copy."""
    import torch

    module = model.get_input_embeddings()
    table = module.weight.detach()
    scale = getattr(module, "embed_scale", None)
    return table if scale is None else table * torch.as_tensor(scale, dtype=table.dtype)


def new_cache(model: PreTrainedModel, layers: KV | None = None) -> DynamicCache:
    """A KV cache for ``model``, empty or holding ``layers`` (keys, values per layer)."""
    from transformers import DynamicCache

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


def add_tasks_beneath(manager: Any, folder: str) -> None:
    """Index ``folder``'s tasks into ``manager`` under the names it does not have yet: as if
    ``--include_path`` named the folder, at the lowest priority, so a stock or user task of the
    same name always wins and lm-eval logs no "overrides existing task"."""
    from collections import defaultdict

    from lm_eval.tasks._index import Kind, TaskIndex

    new = {name: entry for name, entry in TaskIndex.build([Path(folder)]).items()
           if name not in manager._index}
    if not new:
        return
    manager._index.update(new)
    kinds = defaultdict(list)
    for name, entry in manager._index.items():
        kinds[entry.kind].append(name)
    manager._all_tasks = sorted(manager._index)
    manager._all_subtasks = sorted(kinds[Kind.TASK] + kinds[Kind.PY_TASK])
    manager._all_groups = sorted(kinds[Kind.GROUP])
    manager._all_tags = sorted(kinds[Kind.TAG])


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


_NOT_SAVED: list[Callable[[], Exception]] = []


def raise_when_results_not_saved(make_error: Callable[[], Exception]) -> None:
    """Make ``EvaluationTracker.save_results_aggregated`` raise ``make_error()`` when it wrote
    no results file (it catches every error itself and only logs a warning). Installed once;
    the latest ``make_error`` wins."""
    from lm_eval.loggers.evaluation_tracker import EvaluationTracker

    _NOT_SAVED[:] = [make_error]
    original = EvaluationTracker.save_results_aggregated
    if getattr(original, "_softreason_guard", False):
        return

    @functools.wraps(original)
    def save_results_aggregated(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)
        written = _results_file(self)
        if self.output_path and (written is None or not written.is_file()):
            raise _NOT_SAVED[0]()

    save_results_aggregated._softreason_guard = True  # type: ignore[attr-defined]
    EvaluationTracker.save_results_aggregated = save_results_aggregated  # type: ignore[method-assign]


def _results_file(tracker: Any) -> Path | None:
    """The aggregated results file of the tracker's last save, as lm-eval 0.4 names it; None
    if the save stopped before naming it."""
    date_id = getattr(tracker, "date_id", None)
    if date_id is None:
        return None
    path = Path(tracker.output_path)
    if path.suffix == ".json":
        return path.with_name(f"{path.stem}_{date_id}.json")
    name = tracker.general_config_tracker.model_name_sanitized
    return path / str(name) / f"results_{date_id}.json"
