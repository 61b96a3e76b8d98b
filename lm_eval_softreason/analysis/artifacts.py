"""Reading what lm-eval and our runs leave on disk: samples, request arguments, sample keys.

One definition of each, so that rescore, diagnose, curves, digest, compare and view read a
run the same way.
"""

from __future__ import annotations

from typing import Any

from lm_eval_softreason.settings import prompt_sha


def request_args(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(prompt, gen_kwargs) of a sample's first request, in either form lm-eval logs:
    ``simple_evaluate``'s list of argument tuples or its CLI's ``{"gen_args_0": {"arg_0": ..}}``."""
    args = row["arguments"]
    first = args["gen_args_0"] if isinstance(args, dict) else args[0]
    if isinstance(first, dict):
        first = [first[f"arg_{i}"] for i in range(len(first))]
    return first[0], (first[1] if len(first) > 1 else {})


def sample_sha(row: dict[str, Any]) -> str:
    """A sample's key in the trace (``settings.prompt_sha``): the first 16 hex of its logged
    ``prompt_hash``, or the hash of its prompt where none was logged."""
    return row["prompt_hash"][:16] if "prompt_hash" in row else prompt_sha(request_args(row)[0])


def gold_answer(target: Any) -> str:
    """The gold final answer of lm-eval's target: GSM8K targets are whole solutions ending
    "#### N" (lm-eval strips up to "#### " before scoring), SVAMP's are the number itself."""
    text = str(target)
    return text.rsplit("####", 1)[1].strip() if "####" in text else text
