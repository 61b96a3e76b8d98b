"""``lm-eval-softreason``: lm-eval's own CLI with our model and tasks loaded, plus our commands.

Every stock flag works because everything except our own subcommands is handed to
``lm_eval.__main__.cli_evaluate`` unchanged. ``python -m lm_eval_softreason`` is the same
program, so ``accelerate launch -m lm_eval_softreason ...`` runs data-parallel.
"""

from __future__ import annotations

import importlib
import sys

# Our subcommands: name -> ("module:function" taking the remaining argv, one-line summary).
COMMANDS: dict[str, tuple[str, str]] = {
    "compare": ("lm_eval_softreason.compare:main",
                "run strategies on the same tasks: resumable results folder, table, plot"),
    "diagnose": ("lm_eval_softreason.diagnose:main",
                 "why a softreason cell of a compare folder won or lost"),
    "gate": ("lm_eval_softreason.gate:main",
             "compare lm-eval results with a baseline; exit 1 on a regression"),
    "rescore": ("lm_eval_softreason.rescore:main",
                "re-select a finished run's answers under another rule and re-score them"),
    "view": ("lm_eval_softreason.view:main",
             "one self-contained HTML page to read a run question by question"),
}
HELP_FLAGS = ("-h", "--help")


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


def main(argv: list[str] | None = None) -> None:
    """Dispatch our subcommands to their modules, everything else to lm-eval's CLI."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        module, _, function = COMMANDS[args[0]][0].partition(":")
        sys.exit(getattr(importlib.import_module(module), function)(args[1:]))
    if not args or args[0] in HELP_FLAGS:
        print(help_header())

    from lm_eval_softreason.autoload import install
    from lm_eval_softreason.outputs import guard_cli_run

    install(force=True)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *args]
    guard_cli_run()
    cli_evaluate()


if __name__ == "__main__":
    main()
