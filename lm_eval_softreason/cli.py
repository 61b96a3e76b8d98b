"""``lm-eval-softreason``: lm-eval's own CLI with our model and tasks loaded, plus ``gate``.

Every stock flag works because everything except our own subcommands is handed to
``lm_eval.__main__.cli_evaluate`` unchanged. ``python -m lm_eval_softreason`` is the same
program, so ``accelerate launch -m lm_eval_softreason ...`` runs data-parallel.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Dispatch ``gate`` to the regression gate, everything else to lm-eval's CLI."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "gate":
        from lm_eval_softreason.gate import main as gate_main

        sys.exit(gate_main(args[1:]))

    from lm_eval_softreason.autoload import install

    install(force=True)
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm-eval", *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
