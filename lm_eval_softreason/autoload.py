"""Let the stock ``lm_eval`` CLI find our models and tasks, and change nothing else.

lm-eval 0.4.13 reads no plug-in entry points, so a ``.pth`` file calls :func:`install` at
interpreter start; only inside the lm-eval CLI does it register our model names (lazily) and
index our tasks beneath all others (README, "How lm-eval finds the plug-in", has the rules).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Callable, Sequence

_CLI_NAMES = {"lm_eval", "lm-eval"}
_INCLUDE_PATH_FLAG = "--include_path"
_TASK_MANAGER = "lm_eval.tasks.manager"
# Model names -> the classes behind them (imported only when a run asks for that name).
MODELS = {
    "softreason": "lm_eval_softreason.harness.hf_model:SoftReasonLM",
    "softreason-vllm": "lm_eval_softreason.harness.vllm_model:SoftReasonVLLM",
    "softreason-server": "lm_eval_softreason.harness.server_model:SoftReasonServer",
}


def flag_values(args: Sequence[str], flag: str, short: str | None = None) -> list[str]:
    """The values of the last ``flag``/``short`` on an lm-eval command line (``--flag A B``,
    ``--flag=A``, ``-f A``; the last one wins, as in lm-eval's parser), empty if absent."""
    found: list[str] = []
    for i, arg in enumerate(args):
        if arg in (flag, short):
            found = []
            for value in args[i + 1:]:
                if value.startswith("-"):
                    break
                found.append(value)
        elif arg.startswith(flag + "="):
            found = [arg.split("=", 1)[1]]
    return found


def seen_include_paths(argv: list[str] | None = None) -> tuple[str, ...]:
    """The ``--include_path`` folder on this process's lm-eval command line, so answer
    extraction can find tasks that live there."""
    return tuple(flag_values(sys.argv if argv is None else argv, _INCLUDE_PATH_FLAG)[:1])


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
    """Make every ``TaskManager`` index our task folder beneath its own tasks
    (:func:`~lm_eval_softreason.compat.add_tasks_beneath`): stock and ``--include_path`` tasks
    win any name clash, and none of our names is a stock one (a test checks). Applied when
    lm-eval imports its task manager, so a command that lists no tasks imports nothing more."""
    if _TASK_MANAGER in sys.modules:
        _patch_task_manager(sys.modules[_TASK_MANAGER])
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(_TASK_MANAGER, _patch_task_manager))


def _patch_task_manager(module: ModuleType) -> None:
    manager = module.TaskManager
    if getattr(manager.__init__, "_softreason_patched", False):
        return
    original_init = manager.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original_init(self, *args, **kwargs)
        from lm_eval_softreason.compat import add_tasks_beneath
        from lm_eval_softreason.tasks_path import tasks_dir

        add_tasks_beneath(self, tasks_dir())

    __init__._softreason_patched = True  # type: ignore[attr-defined]
    manager.__init__ = __init__


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls ``then(module)`` right after ``name`` is first imported, then steps aside."""

    def __init__(self, name: str, then: Callable[[ModuleType], None]) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then(module: ModuleType) -> None:
            exec_module(module)
            self.then(module)

        spec.loader.exec_module = exec_then  # type: ignore[method-assign]
        return spec


def install(force: bool = False) -> None:
    """Register our model names and tasks: from the ``.pth`` hook (``force=False``) only
    inside the lm-eval CLI (model names only where lm-eval lacks plug-in discovery), never
    raising; from our console script (``force=True``) always, errors propagating."""
    if not force and (os.environ.get("LM_EVAL_SOFTREASON_AUTOLOAD", "1") == "0"
                      or not is_lm_eval_cli()):
        return
    try:
        if not harness_reads_entry_points():
            register_model()
        add_tasks_to_task_manager()
    except Exception as exc:  # a broken hook must never break the interpreter
        if force:
            raise
        print(f"lm_eval_softreason: autoload skipped ({exc!r})", file=sys.stderr)
