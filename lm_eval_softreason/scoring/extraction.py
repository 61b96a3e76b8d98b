"""Read the answer out of a generation exactly as the task's own scoring will.

The verifier compares candidate answers; if it parsed them differently from lm-eval's filters, the
search would optimise for answers that then score differently. So the extractor rebuilds the
task's ``filter_list`` pipelines with lm-eval's own filter classes and runs them on one text.

A task picks which pipelines count, in order, with ``metadata.softreason_answer_filters`` (a
free-form key that other models ignore); by default every pipeline counts, in YAML order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lm_eval.api.filter import FilterEnsemble

ANSWER_FILTERS_KEY = "softreason_answer_filters"
# What lm-eval's regex filter yields when nothing matches (its default ``fallback``).
INVALID = "[invalid]"
# lm-eval's pipeline name for tasks without a filter_list (it just takes the first response).
NO_FILTER_PIPELINE = "none"


@dataclass(frozen=True)
class _Pipeline:
    """One named filter pipeline: lm-eval filter factories applied in order."""

    name: str
    steps: list[Callable[[], Any]]
    invalid: frozenset[str]  # outputs that mean "no answer": "[invalid]" and any fallback

    def run(self, text: str) -> str:
        """Apply every step to a single response, as ``FilterEnsemble.apply`` does for a batch."""
        resps: Any = [[text]]
        docs: list[dict[str, Any]] = [{}]
        for make_filter in self.steps:
            resps = make_filter().apply(resps, docs)
        (out,) = list(resps)
        if isinstance(out, (list, tuple)):  # a pipeline without take_first keeps a list
            out = out[0] if out else INVALID
        return str(out)


def filter_ensembles(filter_list: list[dict[str, Any]] | None) -> list[FilterEnsemble]:
    """A task's ``filter_list`` as lm-eval ``FilterEnsemble`` s, built as ``ConfigurableTask``
    builds them (None or empty: its "none" pipeline); a bad entry raises ``ValueError`` naming it.
    The one builder of the task's pipelines, for the extractor and for rescoring alike."""
    from lm_eval.api.filter import FilterEnsemble
    from lm_eval.api.registry import get_filter

    if not filter_list:  # what ConfigurableTask uses when a task has no filter_list
        filter_list = [{"name": NO_FILTER_PIPELINE, "filter": [{"function": "take_first"}]}]
    ensembles = []
    for spec in filter_list:
        if (not isinstance(spec, dict) or "name" not in spec
                or not isinstance(spec.get("filter"), list)):
            raise ValueError(
                f"bad filter_list entry {spec!r}: expected {{'name': str, 'filter': "
                f"[{{'function': name, **kwargs}}, ...]}}"
            )
        steps: list[partial[Any]] = []
        for step in spec["filter"]:
            if not isinstance(step, dict) or "function" not in step:
                raise ValueError(
                    f"filter pipeline {spec['name']!r}: step {step!r} has no 'function'")
            kwargs = {k: v for k, v in step.items() if k != "function"}
            try:
                cls = get_filter(step["function"])
                cls(**kwargs)  # fail now, naming the pipeline, rather than at the first answer
            except (KeyError, TypeError) as exc:
                detail = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
                raise ValueError(
                    f"filter pipeline {spec['name']!r}, step {step!r}: {' '.join(detail.split())}"
                ) from exc
            steps.append(partial(cls, **kwargs))
        ensembles.append(FilterEnsemble(name=str(spec["name"]), filters=steps))
    return ensembles


def _single_response(ensemble: FilterEnsemble) -> _Pipeline:
    """One ensemble as it runs on a single response.

    ``take_first_k`` is left out: it only selects among repeated samples, which on a single
    response is the identity, and lm-eval's version asserts that k responses exist.
    """
    from lm_eval.filters.selection import TakeKFilter

    steps = [f for f in ensemble.filters
             if not (isinstance(f.func, type) and issubclass(f.func, TakeKFilter))]
    invalid = {INVALID} | {str(f.keywords["fallback"]) for f in steps if "fallback" in f.keywords}
    return _Pipeline(name=ensemble.name, steps=steps, invalid=frozenset(invalid))


class AnswerExtractor:
    """Extract a task's answer from one generated text with the task's own filter pipelines."""

    def __init__(self, pipelines: Sequence[_Pipeline]) -> None:
        if not pipelines:
            raise ValueError("an AnswerExtractor needs at least one filter pipeline")
        self._pipelines = list(pipelines)
        self.pipelines: list[str] = [p.name for p in self._pipelines]

    @classmethod
    def from_filter_list(
        cls, filter_list: list[dict[str, Any]] | None, pipelines: list[str] | None = None
    ) -> AnswerExtractor:
        """Build from a task config's ``filter_list`` (None or empty: lm-eval's "none" pipeline).

        Args:
            filter_list: the task's ``filter_list``, as in its YAML.
            pipelines: names of the pipelines to use, in priority order; None uses all of them
                in ``filter_list`` order.
        """
        built = [_single_response(e) for e in filter_ensembles(filter_list)]
        if pipelines is None:
            return cls(built)
        if isinstance(pipelines, str) or not all(isinstance(p, str) for p in pipelines):
            raise ValueError(
                f"{ANSWER_FILTERS_KEY} must be a list of pipeline names, got {pipelines!r}"
            )
        by_name = {p.name: p for p in built}
        unknown = [name for name in pipelines if name not in by_name]
        if unknown:
            raise ValueError(
                f"{ANSWER_FILTERS_KEY} names unknown filter pipeline(s) {unknown}; "
                f"this task defines {list(by_name)}"
            )
        return cls([by_name[name] for name in pipelines])

    def __call__(self, text: str) -> str | None:
        """The first valid answer over the pipelines in order, stripped; None if none is valid."""
        for pipeline in self._pipelines:
            answer = pipeline.run(text).strip()
            if answer and answer not in pipeline.invalid:
                return answer
        return None


def _own_task_index() -> dict[str, Any]:
    """Index of our tasks folder only: instant, and covers svamp and the offline gsm8k copies."""
    from lm_eval_softreason.tasks_path import own_task_manager

    return own_task_manager().task_index


@cache
def _full_task_index(include_paths: tuple[str, ...]) -> dict[str, Any]:
    """Index of every task lm-eval knows (~13 s), plus the ``--include_path`` folders this
    process has passed to a TaskManager; built once per set of paths and only if needed."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_paths) or None).task_index


def task_config(task_name: str) -> dict[str, Any]:
    """The task's YAML config, includes merged and ``!function`` references imported."""
    from lm_eval_softreason.autoload import seen_include_paths
    from lm_eval_softreason.compat import TASK_KINDS, entry_config, entry_kind

    entry = _own_task_index().get(task_name) or _full_task_index(
        seen_include_paths()).get(task_name)
    if entry is None:
        raise ValueError(
            f"unknown task {task_name!r}: neither lm_eval_softreason's tasks nor lm-eval's task "
            "index define it"
        )
    if entry_kind(entry) not in TASK_KINDS:
        raise ValueError(
            f"{task_name!r} is a {entry_kind(entry)}, not a task; answers are extracted per "
            "task, so pass one of its tasks' names"
        )
    return entry_config(entry)


@cache
def get_answer_extractor(task_name: str) -> AnswerExtractor:
    """The cached extractor for ``task_name``, honouring ``metadata.softreason_answer_filters``."""
    config = task_config(task_name)
    metadata = config.get("metadata")
    pipelines = metadata.get(ANSWER_FILTERS_KEY) if isinstance(metadata, dict) else None
    try:
        return AnswerExtractor.from_filter_list(config.get("filter_list"), pipelines)
    except ValueError as exc:
        raise ValueError(f"task {task_name!r}: {exc}") from exc
