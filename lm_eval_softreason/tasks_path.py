"""Where the bundled task YAMLs live (installed wheels and source checkouts alike), and the
lm-eval task managers that read them first."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Collection


def tasks_dir() -> str:
    """Return the folder holding our task YAMLs (``svamp``, the ``gsm8k*_offline`` variants).

    A wheel installs them inside the package (``lm_eval_softreason/tasks``); an editable
    install or a source checkout keeps them in the repository's top-level ``tasks/``.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "tasks", here.parent / "tasks"):
        if candidate.is_dir():
            return str(candidate)
    raise FileNotFoundError(
        f"lm_eval_softreason task folder not found next to {here}; reinstall the package"
    )


@functools.cache
def own_task_manager() -> Any:
    """An lm-eval ``TaskManager`` of our tasks folder only: instant, and covers svamp and the
    offline gsm8k copies."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=tasks_dir(), include_defaults=False)


@functools.cache
def _full_task_manager() -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=tasks_dir())


def task_manager(names: Collection[str]) -> Any:
    """Our tasks folder's ``TaskManager`` when it defines every name; else the full lm-eval
    index (~13 s, built once) with our folder included."""
    own = own_task_manager()
    return own if set(names) <= set(own.all_tasks) else _full_task_manager()
