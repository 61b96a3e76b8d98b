"""Small builders shared by the model tests."""

from __future__ import annotations

from pathlib import Path

from lm_eval.api.instance import Instance

ROOT = Path(__file__).resolve().parent.parent  # the repository, wherever a test file sits

# Small search settings that keep model tests to seconds on the tiny model.
FAST = {"max_rounds": 1, "n_init": 3, "batch": 2, "proj_dim": 8, "verifier_max_tokens": 8}

QUESTIONS = [
    "Q: There are 15 trees in the grove. How many trees did the workers plant today?\nA:",
    "Q: Leah had 32 chocolates and her sister had 42. If they ate 35, how many are left?\nA:",
    "Q: Shawn has five toys. He got two toys each from his mom and dad. How many now?\nA:",
]


def request(context: str, task: str = "svamp", max_gen_toks: int = 12, doc_id: int = 0,
            repeats: int = 1, until: list[str] | None = None) -> Instance:
    gen_kwargs = {"until": until if until is not None else ["Q:"], "do_sample": False,
                  "max_gen_toks": max_gen_toks}
    return Instance("generate_until", {"answer": "secret gold"}, (context, gen_kwargs),
                    idx=0, metadata=(task, doc_id, repeats))
