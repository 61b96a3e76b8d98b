"""Let the stock ``lm_eval`` CLI find the ``softreason`` model, and change nothing else.

lm-eval 0.4.13 reads no plug-in entry points, so a ``.pth`` file in site-packages calls
:func:`install` at interpreter start. Inside the lm-eval CLI, and only there, it registers the
model names ``softreason`` and ``softreason-vllm`` as lazy placeholders: nothing else of ours is imported, no class is
patched, no task folder is added and no environment variable is set, so a run that does not ask
for ``--model softreason`` is exactly the run it would be without this package. It steps aside
where lm-eval reads plug-in entry points itself (upstream PR #4013), never raises, is
idempotent (site-packages can be processed twice), and ``LM_EVAL_SOFTREASON_AUTOLOAD=0`` turns
it off.

Our tasks come with our own console script, ``lm-eval-softreason``, which calls
``install(force=True)``; with the stock CLI, pass ``--include_path`` (README, "How lm-eval
finds the plug-in").
"""

from __future__ import annotations

import os
import sys

_CLI_NAMES = {"lm_eval", "lm-eval"}
_INCLUDE_PATH_FLAG = "--include_path"
# Model names -> the classes behind them (imported only when a run asks for that name).
MODELS = {
    "softreason": "lm_eval_softreason.model:SoftReasonLM",
    "softreason-vllm": "lm_eval_softreason.model_vllm:SoftReasonVLLM",
}


def seen_include_paths(argv: list[str] | None = None) -> tuple[str, ...]:
    """The ``--include_path`` folder on this process's lm-eval command line (the last one wins,
    as in lm-eval's parser), so answer extraction can find tasks that live there."""
    args = list(sys.argv if argv is None else argv)
    found: tuple[str, ...] = ()
    for i, arg in enumerate(args):
        if arg == _INCLUDE_PATH_FLAG and i + 1 < len(args):
            found = (args[i + 1],)
        elif arg.startswith(_INCLUDE_PATH_FLAG + "="):
            found = (arg.split("=", 1)[1],)
    return found


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


def harness_reads_entry_points() -> bool:
    """True for an lm-eval with entry-point plug-in discovery (upstream PR #4013 added
    ``lm_eval.api.registry.load_plugins``): it finds our ``lm_eval.models`` entry point itself."""
    from lm_eval.api import registry

    return callable(getattr(registry, "load_plugins", None))


def register_model() -> None:
    """Register our model names as lazy placeholders without hiding lm-eval's built-ins.

    ``get_model`` imports ``lm_eval.models`` only when the registry is empty, so the built-ins
    are imported first (cheap: they are lazy placeholders themselves).
    """
    import lm_eval.models  # noqa: F401  (registers hf, vllm, ... before we add ours)
    from lm_eval.api.registry import model_registry

    for name, target in MODELS.items():
        if name not in model_registry.keys():
            model_registry.register(name, target=target)


def add_tasks_to_task_manager() -> None:
    """Prepend our task folder to every ``TaskManager``'s include paths (our console script).

    Our task names are our own, so this adds tasks and changes none of lm-eval's; ours go before
    the user's ``--include_path`` so that a user's same-named task still wins.
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
        original_init(self, *args, include_path=paths, **kwargs)

    __init__._softreason_patched = True  # type: ignore[attr-defined]
    TaskManager.__init__ = __init__  # type: ignore[method-assign]


def install(force: bool = False) -> None:
    """The ``.pth`` hook (``force=False``): register the model name, only inside the lm-eval
    CLI of a harness without plug-in discovery. Our console script (``force=True``): the same
    wherever needed, plus our tasks; errors propagate there."""
    if not force and (os.environ.get("LM_EVAL_SOFTREASON_AUTOLOAD", "1") == "0"
                      or not is_lm_eval_cli()):
        return
    try:
        if not harness_reads_entry_points():
            register_model()
        if force:
            add_tasks_to_task_manager()
    except Exception as exc:  # a broken hook must never break the interpreter
        if force:
            raise
        print(f"lm_eval_softreason: autoload skipped ({exc!r})", file=sys.stderr)
