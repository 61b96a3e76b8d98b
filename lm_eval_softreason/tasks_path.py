"""Where the bundled task YAMLs live, for installed wheels and source checkouts alike."""

from __future__ import annotations

from pathlib import Path


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
