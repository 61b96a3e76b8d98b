"""``python -m lm_eval_softreason`` (and ``accelerate launch -m lm_eval_softreason``)."""

from lm_eval_softreason.cli import main

main()
