"""``lm-eval-softreason``: lm-eval's own CLI with our model and tasks loaded, plus our commands.

Every stock flag works because everything except our own subcommands is handed to
``lm_eval.__main__.cli_evaluate`` unchanged. ``python -m lm_eval_softreason`` is the same
program, so ``accelerate launch -m lm_eval_softreason ...`` runs data-parallel.

A :class:`~lm_eval_softreason.errors.UserError` (a bad argument, file or folder, raised by our
code in either) ends the program with one line on stderr and exit code 2; ``--verbosity DEBUG``,
``LMEVAL_LOG_LEVEL=DEBUG`` or ``LM_EVAL_SOFTREASON_TRACEBACK=1`` shows its traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

from lm_eval_softreason.errors import UserError
from lm_eval_softreason.autoload import flag_values
from lm_eval_softreason.harness.preflight import check_cli_args

# Our subcommands: name -> ("module:function" taking the remaining argv, one-line summary).
COMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("lm_eval_softreason.analysis.compare.cli:main",
                "run strategies on the same tasks: resumable results folder, table, plot"),
    "diagnose": ("lm_eval_softreason.analysis.diagnose:main",
                 "why a softreason cell of a compare folder won or lost"),
    "gate": ("lm_eval_softreason.analysis.gate:main",
             "compare lm-eval results with a baseline; exit 1 on a regression"),
    "serve": ("lm_eval_softreason.harness.serve:main",
              "start vLLM's OpenAI server with the flags --model softreason-server needs"),
    "rescore": ("lm_eval_softreason.analysis.rescore:main",
                "re-select a finished run's answers under another rule and re-score them"),
    "view": ("lm_eval_softreason.analysis.view:main",
             "one self-contained HTML page to read a run question by question"),
}
HELP_FLAGS = ("-h", "--help")
EXIT_USER_ERROR = 2
TRACEBACK_ENV = "LM_EVAL_SOFTREASON_TRACEBACK"


def help_header() -> str:
    """What ``lm-eval-softreason --help`` prints before lm-eval's own help, which never
    mentions our subcommands."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "lm-eval-softreason: lm-eval's command line with the softreason model and this "
        "package's tasks",
        "(svamp, svamp_cot, gsm8k*_offline) loaded; every lm-eval command and flag works "
        "unchanged.",
        "",
        "lm-eval-softreason's own commands (each has --help):",
        *(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()),
        "",
        "lm-eval's help follows.",
        "",
    ]
    return "\n".join(lines)


def wants_traceback(args: list[str]) -> bool:
    """Whether a user error should show its traceback: ``--verbosity DEBUG`` (lm-eval's flag),
    ``LMEVAL_LOG_LEVEL=DEBUG`` (its newer form) or ``LM_EVAL_SOFTREASON_TRACEBACK=1``."""
    verbosity = flag_values(args, "--verbosity", "-v")[:1]
    return (os.environ.get(TRACEBACK_ENV, "0") not in ("", "0")
            or os.environ.get("LMEVAL_LOG_LEVEL", "").upper() == "DEBUG"
            or [v.upper() for v in verbosity] == ["DEBUG"])


def main(argv: list[str] | None = None) -> None:
    """Run a command line; a :class:`UserError` is one line on stderr and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _dispatch(args)
    except UserError as exc:
        if wants_traceback(args):
            raise
        print(f"lm-eval-softreason: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def _dispatch(args: list[str]) -> None:
    """Dispatch our subcommands to their modules, everything else (checked first by
    :func:`~lm_eval_softreason.harness.preflight.check_cli_args`) to lm-eval's CLI."""
    if args and args[0] in COMMANDS:
        module, _, function = COMMANDS[args[0]][0].partition(":")
        sys.exit(getattr(importlib.import_module(module), function)(args[1:]))
    if not args or args[0] in HELP_FLAGS:
        print(help_header())
    check_cli_args(args)

    from lm_eval_softreason.autoload import install
    from lm_eval_softreason.harness.outputs import guard_cli_run

    install(force=True)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *args]
    guard_cli_run()
    cli_evaluate()


if __name__ == "__main__":
    main()
