"""The same-model verifiers: prompts, answer and verdict parsing, prefix reuse, batching."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from lm_eval_softreason.scoring.extraction import get_answer_extractor
from lm_eval_softreason.scoring.verification import VERIFIERS, VerifyRequest
from lm_eval_softreason.trace import read_trace
from lm_eval_softreason.scoring.verifiers import MODEL_VERIFIERS, ChatFormat, MultiGenerate
from lm_eval_softreason.scoring.verifiers.base import ANALYSES_SEPARATOR
from lm_eval_softreason.scoring.verifiers.judge import UNCLEAR
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
    [(prefix, rest)] = lm.verifier.build_prompts(req)
    assert prefix == MultiGenerate.instructions
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
    prefix_len = len(lm.tokenizer.encode(MultiGenerate.instructions,
                                         add_special_tokens=False))
    assert 0 < extra  # verifier suffixes only ...
    rounds = stats["rounds"]
    assert extra < rounds * (prefix_len + 400)  # ... the instructions are not re-prefilled


def test_extractor_used_by_verifier_matches_task(lm):
    assert get_answer_extractor("svamp")("so 3 + 4 = 7. The answer is 7") == "7"


# --- the paper's four designs -------------------------------------------------------------------


def make(lm, name):
    return MODEL_VERIFIERS[name](lm.engine, lm._extractor, 8, stop=[])


def three(task="svamp"):
    return VerifyRequest(question=QUESTIONS[0], task_name=task,
                         candidates=["So 3 + 4 = 7. The answer is 7", "The answer is 8",
                                     "I think it is 7."],
                         answers=["7", "8", "7"])


def test_every_built_in_name_but_none_is_a_model_verifier():
    assert set(VERIFIERS) - {"none"} == set(MODEL_VERIFIERS)
    assert MODEL_VERIFIERS["self"] is MultiGenerate


def test_each_design_is_asked_in_the_words_its_seeds_and_golden_outputs_were_made_with():
    """The instructions are every verifier prompt's prefix: a changed word changes results."""
    start = "You are checking {} to a problem. Read the problem and the {}, reason step by step "
    multi = start.format("candidate solutions", "candidate solutions")
    single = start.format("a candidate solution", "candidate solution")
    assert {name: v.instructions for name, v in MODEL_VERIFIERS.items()} == {
        "self": MultiGenerate.instructions,
        "multi_generate": multi + "about which answer is correct (the candidates may all be "
        "wrong), then end with a final line of the form 'Answer: <final answer>'.\n\n",
        "single_generate": single + "about what the correct answer is (the candidate may be "
        "wrong), then end with a final line of the form 'Answer: <final answer>'.\n\n",
        "multi_judge": multi + "about each one, then end with one line per solution of the form "
        "'Solution <number>: correct' or 'Solution <number>: incorrect'.\n\n",
        "single_judge": single + "about whether its final answer is correct, then end with a "
        "final line of the form 'Verdict: correct' or 'Verdict: incorrect'.\n\n",
    }


def test_multi_judge_reads_each_solutions_last_verdict(lm):
    judge = make(lm, "multi_judge")
    analysis = ("Solution 1 looks correct at first. Solution 3 is wrong.\n"
                "Solution 1: incorrect\n**Solution 2:** Correct\n")
    result = judge.conclude(three(), [analysis])
    assert result.rewards == [0.0, 1.0, 0.0]  # 1: the last verdict wins
    assert result.votes() == []  # a judge gives no answer to vote with


def test_multi_judge_does_not_read_solution_10_as_solution_1(lm):
    req = VerifyRequest(QUESTIONS[0], [f"{i}" for i in range(10)], [f"{i}" for i in range(10)])
    rewards = make(lm, "multi_judge").conclude(req, ["Solution 10: correct"]).rewards
    assert rewards == [UNCLEAR] * 9 + [1.0]


@pytest.mark.parametrize("analysis, reward", [
    ("The sum is 7, so it holds.\nVerdict: correct", 1.0),
    ("Verdict: correct ... wait, 3 + 4 is 8.\nVerdict: **incorrect**", 0.0),
    ("verdict - not correct", 0.0),
    ("Verdict: wrong.", 0.0),
    ("The solution is correct.", UNCLEAR),  # no 'Verdict' line: not read as one
])
def test_single_judge_verdicts(lm, analysis, reward):
    req = VerifyRequest(QUESTIONS[0], ["The answer is 7"], ["7"])
    assert make(lm, "single_judge").conclude(req, [analysis]).rewards == [reward]


def test_single_generate_rewards_each_candidate_against_its_own_call(lm):
    result = make(lm, "single_generate").conclude(
        three(), ["3 + 4 = 7.\nAnswer: 7", "3 + 4 = 7.\nAnswer: 7", "Answer: 8"])
    assert result.rewards == [1.0, 0.0, 0.0]
    assert result.votes() == ["7", "7", "8"]


def test_multi_generate_is_unchanged_the_round_gets_one_answer(lm):
    result = make(lm, "multi_generate").conclude(three(), ["3 + 4 = 7.\nAnswer: 7"])
    assert result.rewards == [1.0, 0.0, 1.0]
    assert result.votes() == ["7"]


@pytest.mark.parametrize("name, prompts", [("multi_generate", 1), ("multi_judge", 1),
                                           ("single_generate", 3), ("single_judge", 3)])
def test_prompts_per_design_share_one_prefix(lm, name, prompts):
    verifier = make(lm, name)
    built = verifier.build_prompts(three())
    assert len(built) == prompts
    assert {prefix for prefix, _ in built} == {verifier.instructions}
    candidates = three().candidates
    for k, (_, rest) in enumerate(built):
        assert rest.startswith("Problem:\n" + QUESTIONS[0].strip())
        assert rest.endswith("Analysis: Let's think step by step.")
        shown = [c for c in candidates if c in rest]
        assert shown == (candidates if prompts == 1 else [candidates[k]])


@pytest.mark.parametrize("name", ["single_generate", "multi_judge", "single_judge"])
def test_each_design_runs_a_round_in_one_decode_call(configure, tmp_path, monkeypatch, name):
    """All verifier prompts of all questions of a round go to the engine together; the trace
    holds the rewards, the verifier's answers and its tokens."""
    lm = configure(verifier=name, trace_path=str(tmp_path / f"{name}.jsonl"), n_init=3,
                   max_rounds=0)
    calls, verifier_generated = [], [0]
    decode = type(lm.engine).decode

    def counted(engine, rows, until, max_new_tokens):
        calls.append((len(rows), max_new_tokens))
        results = decode(engine, rows, until, max_new_tokens)
        if max_new_tokens == 8:  # FAST's verifier_max_tokens
            verifier_generated[0] += sum(len(r.tokens) for r in results)
        return results

    monkeypatch.setattr(type(lm.engine), "decode", counted)
    lm.generate_until([request(q) for q in QUESTIONS])
    records = read_trace(tmp_path / f"{name}.jsonl")
    per_question = 3 if name.startswith("single") else 1
    verifier_calls = [c for c in calls if c[1] == 8]  # FAST's verifier_max_tokens
    assert verifier_calls == [(3 * per_question, 8)]
    # each question counts its own verifier rows' tokens: together, all the verifier decoded
    assert sum(r["verifier_tokens"] for r in records) == verifier_generated[0]
    for r in records:
        assert 0 < r["verifier_tokens"] <= 8 * per_question
        assert all(c["r_verifier"] in (0.0, 0.5, 1.0) for c in r["candidates"])
        assert len(r["verifier_answers"]) == (3 if name == "single_generate" else 0)
        # what the verifier wrote, one string per verified round: its rewards read again
        (analysis,) = r["verifier_analyses"]
        texts = analysis.split(ANALYSES_SEPARATOR)
        assert len(texts) == per_question
        cands = r["candidates"]
        again = lm.verifier.conclude(VerifyRequest(
            question="", candidates=[c["text"] for c in cands],
            answers=[c["answer"] for c in cands], task_name="svamp"), texts)
        assert again.rewards == [c["r_verifier"] for c in cands]
        assert again.votes() == r["verifier_answers"]
