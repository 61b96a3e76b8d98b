"""Make the stock ``lm_eval`` CLI find the ``softreason`` model and our tasks.

lm-eval 0.4.13 has no plug-in discovery (entry points are never read), so a ``.pth`` file in
site-packages calls :func:`install` at interpreter start. It must be invisible everywhere else:
it only acts inside the lm-eval CLI, never raises, and is idempotent (site-packages can be
processed twice). Our own console script calls ``install(force=True)``.
"""

from __future__ import annotations

import os
import sys

_CLI_NAMES = {"lm_eval", "lm-eval"}
_installed = False
_include_paths: list[str] = []


def seen_include_paths() -> tuple[str, ...]:
    """User ``--include_path`` folders passed to any TaskManager in this process, so answer
    extraction can find tasks that live there."""
    return tuple(_include_paths)


def is_lm_eval_cli(argv: list[str] | None = None) -> bool:
    """True when this process is ``lm_eval``/``lm-eval`` or ``python -m lm_eval``."""
    argv = list(getattr(sys, "orig_argv", sys.argv) if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg == "-m":
            return i + 1 < len(argv) and argv[i + 1] in ("lm_eval", "lm_eval.__main__")
        if i > 0 and not arg.startswith("-"):
            # The first non-option argument after the interpreter is the script being run.
            return os.path.basename(arg) in _CLI_NAMES
    return False


def register_model() -> None:
    """Register ``softreason`` as a lazy placeholder without hiding lm-eval's built-ins.

    ``get_model`` imports ``lm_eval.models`` only when the registry is empty, so the built-ins
    are imported first (cheap: they are lazy placeholders themselves).
    """
    import lm_eval.models  # noqa: F401  (registers hf, vllm, ... before we add ours)
    from lm_eval.api.registry import model_registry

    if "softreason" not in model_registry.keys():
        model_registry.register("softreason", target="lm_eval_softreason.model:SoftReasonLM")


def add_tasks_to_task_manager() -> None:
    """Prepend our task folder to every ``TaskManager``'s include paths.

    Ours go before the user's ``--include_path`` so that a user's same-named task still wins.
    """
    from lm_eval.tasks.manager import TaskManager

    if getattr(TaskManager.__init__, "_softreason_patched", False):
        return
    from lm_eval_softreason.tasks_path import tasks_dir

    original_init = TaskManager.__init__

    def __init__(self, *args, include_path=None, **kwargs):  # type: ignore[no-untyped-def]
        extra = [] if include_path is None else (
            list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        )
        ours = tasks_dir()
        paths = [ours] + [p for p in extra if str(p) != ours]
        _include_paths.extend(str(p) for p in paths[1:] if str(p) not in _include_paths)
        original_init(self, *args, include_path=paths, **kwargs)

    __init__._softreason_patched = True  # type: ignore[attr-defined]
    TaskManager.__init__ = __init__  # type: ignore[method-assign]


def cpu_defaults() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user chose: on 2 cores it decoded 1.3-2.6x faster
    than the default in benchmarks/bench_cpu_settings.py (docs/performance.md). OpenMP reads it
    once, when torch loads, so this must run before ``import torch``."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def install(force: bool = False) -> None:
    """Register the model and tasks; with ``force=False`` only inside the lm-eval CLI."""
    global _installed
    if _installed:
        return
    if not force and (os.environ.get("LM_EVAL_SOFTREASON_AUTOLOAD", "1") == "0"
                      or not is_lm_eval_cli()):
        return
    try:
        cpu_defaults()
        register_model()
        add_tasks_to_task_manager()
        _installed = True
    except Exception as exc:  # a broken hook must never break the interpreter
        if force:
            raise
        print(f"lm_eval_softreason: autoload skipped ({exc!r})", file=sys.stderr)
