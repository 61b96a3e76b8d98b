"""The self-verifier's prompt, answer parsing and prefix reuse."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lm_eval_softreason.extraction import get_answer_extractor
from lm_eval_softreason.objectives import VerifyRequest
from lm_eval_softreason.verifier import INSTRUCTIONS, ChatFormat
from tests.helpers import QUESTIONS, request


@pytest.mark.parametrize("analysis, task, expected", [
    ("Solution 2 adds wrongly. 32 + 42 = 74, 74 - 35 = 39.\nAnswer: 39", "svamp", "39"),
    ("Both agree.\nAnswer: $1,000.", "svamp", "$1,000."),  # as the flexible filter reads it
    ("The answer is 42", "svamp", "42"),
    ("So the final answer: -3.5 apples", "gsm8k", "-3.5"),
    ("Answer: yes, it is.", "some_unknown_task", "yes, it is."),  # compared normalised
    ("Answer:", "svamp", None),
])
def test_parse_answer_reads_after_answer_with_task_filters(lm, analysis, task, expected):
    assert lm.verifier.parse_answer(analysis, task) == expected


def test_chat_format_unwraps_templated_prompts(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = ChatFormat(tok)
    templated = tok.apply_chat_template([{"role": "user", "content": "Q: 2+2?\nA:"}],
                                        tokenize=False, add_generation_prompt=True)
    assert chat.unwrap(templated) == ("Q: 2+2?\nA:", True)
    assert chat.unwrap("Q: 2+2?\nA:") == ("Q: 2+2?\nA:", False)


def test_prompt_has_question_and_candidates_but_shared_prefix_first(lm):
    req = VerifyRequest(question=QUESTIONS[0], candidates=["x = 6. The answer is 6.", "7"],
                        answers=["6", "7"], task_name="svamp")
    prefix, rest = lm.verifier.build_prompt(req)
    assert prefix == INSTRUCTIONS
    assert "Problem:\n" + QUESTIONS[0].strip() in rest
    assert "Solution 1:\nx = 6. The answer is 6." in rest and "Solution 2:\n7" in rest
    assert rest.endswith("Analysis: Let's think step by step.")


def test_prompt_prefilled_once_and_verifier_prefix_once_per_run(lm):
    reqs = [request(q) for q in QUESTIONS]
    lm.configure(max_rounds=1, n_init=3, batch=2, proj_dim=8, verifier="none")
    lm.generate_until(reqs)
    prompt_tokens = sum(len(lm.tok_encode(q)) for q in QUESTIONS)
    # 3-5 candidates per question, yet each prompt is prefilled exactly once
    assert lm.get_model_info()["softreason_stats"]["tokens_prefilled"] == prompt_tokens

    lm.configure(max_rounds=1, n_init=3, batch=2, proj_dim=8, verifier_max_tokens=8)
    lm.generate_until(reqs)
    verifier = lm.verifier
    assert list(verifier._prefix_state) == [False]  # one shared prefix state for the run
    stats = lm.get_model_info()["softreason_stats"]
    extra = stats["tokens_prefilled"] - prompt_tokens
    prefix_len = len(lm.tokenizer.encode(INSTRUCTIONS, add_special_tokens=False))
    assert 0 < extra  # verifier suffixes only ...
    rounds = stats["rounds"]
    assert extra < rounds * (prefix_len + 400)  # ... the instructions are not re-prefilled


def test_extractor_used_by_verifier_matches_task(lm):
    assert get_answer_extractor("svamp")("so 3 + 4 = 7. The answer is 7") == "7"
