"""maj@k budget curves from one self-consistency run, checked against values computed by hand."""

from __future__ import annotations

import random

import pytest

from lm_eval_softreason.analysis import curves
from lm_eval_softreason.scoring.answers import answers_match
from lm_eval_softreason.settings import prompt_sha

# 3 questions x 3 samples: (answers in sampling order, tokens per sample, gold)
GOLD = [
    (["1", "1", "2"], [10, 20, 30], "1"),
    (["2", "1", "3"], [5, 5, 5], "1"),
    ([None, "2", "2"], [3, 6, 9], "2"),
]


def scored(questions: list[tuple[list[str | None], list[int], str]]) -> list[tuple]:
    """(answers, tokens, right) with right = each answer against gold."""
    return [(a, t, [float(answers_match(x, gold)) for x in a]) for a, t, gold in questions]


HAND = scored(GOLD)


def test_maj_at_k_by_hand():
    """Per question, right subsets over all subsets:
    k=1: 2/3, 1/3, 2/3 (None never counts);
    k=2: q1 {1,1} {1,2} {1,2} all 1 (ties go to the answer sampled first); q2 {2,1} -> 2,
         {2,3} -> 2, {1,3} -> 1: 1/3; q3 {None,2} {None,2} {2,2}: all 2 -> 1;
    k=3: q1 1; q2 a three-way tie -> 2 (sampled first): 0; q3 1.
    Tokens: mean per sample 20, 5, 6 -> k * 31/3."""
    points = curves.maj_at_k(HAND)
    assert [p.k for p in points] == [1, 2, 3]
    assert [p.accuracy for p in points] == pytest.approx([5 / 9, 7 / 9, 2 / 3], abs=1e-12)
    # sample std over questions / sqrt(3): k=1 devs (1,-2,1)/9; k=2 (2,-4,2)/9; k=3 (1,-2,1)/3
    assert [p.stderr for p in points] == pytest.approx([1 / 9, 2 / 9, 1 / 3], abs=1e-12)
    assert [p.tokens for p in points] == pytest.approx([31 / 3, 62 / 3, 31], abs=1e-12)


def test_ties_go_to_the_answer_sampled_first_in_every_subset():
    # the same multiset of answers in two sampling orders: only the tie-break differs
    assert curves.maj_at_k(scored([(["7", "8"], [1, 1], "7")]))[1].accuracy == 1.0
    assert curves.maj_at_k(scored([(["8", "7"], [1, 1], "7")]))[1].accuracy == 0.0


def test_a_subset_scores_the_sample_its_vote_returns():
    """As the run returns it: the first holder of the majority answer, or the first sample
    when none parsed; its own score counts (the task's metric may read its text otherwise)."""
    assert [p.accuracy for p in curves.maj_at_k([(["7", "7"], [1, 1], [0.0, 1.0])])] == \
        [0.5, 0.0]
    assert [p.accuracy for p in curves.maj_at_k([([None, None], [1, 1], [1.0, 0.0])])] == \
        [0.5, 1.0]
    assert [p.accuracy for p in curves.maj_at_k([([None, "3"], [1, 1], [1.0, 0.0])])] == \
        [0.5, 0.0]


def test_a_question_with_fewer_samples_votes_over_all_it_has():
    """A greedy fallback (one sample) answers the same at every k and costs its tokens once."""
    points = curves.maj_at_k(scored([(["1"], [4], "1"), (["2", "1"], [2, 4], "1")]))
    assert [p.accuracy for p in points] == [(1 + 0.5) / 2, (1 + 0) / 2]
    assert [p.tokens for p in points] == [(4 + 3) / 2, (4 + 6) / 2]


def test_random_subsets_when_there_are_too_many():
    rng = random.Random(3)
    drawn = curves.subsets(5, 2, 4, rng)  # C(5, 2) = 10 > 4
    assert drawn == curves.subsets(5, 2, 4, random.Random(3))
    assert len(drawn) == 4 and all(len(p) == 2 and p == tuple(sorted(p)) for p in drawn)
    assert curves.subsets(5, 2, 10, rng) == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3),
                                              (1, 4), (2, 3), (2, 4), (3, 4)]
    # half of the samples right: each drawn pair is right iff the first sample of it is
    (q,) = scored([(["1", "2", "1", "2", "1"], [1] * 5, "1")])
    # k=1 takes all 5 singletons (no draw), so k=2's 5 pairs are the seed's first draws
    expected = sum(p[0] % 2 == 0 for p in curves.subsets(5, 2, 5, random.Random(9))) / 5
    assert 0 < expected < 1
    assert curves.maj_at_k([q], max_subsets=5, seed=9)[1].accuracy == expected


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one question"):
        curves.maj_at_k([])
    with pytest.raises(ValueError, match="each with its token count and score"):
        curves.maj_at_k([(["1", "2"], [3, 3], [1.0])])


def test_curve_from_a_runs_trace_and_samples():
    """Trace records join the samples by prompt hash; the gold is the target's final answer
    (GSM8K's '#### N'); one sample row per filter."""
    prompts = ["Q: one?\nA:", "Q: two?\nA:"]
    trace = {prompt_sha(p): {"prompt_sha": prompt_sha(p), "candidates": [
        {"answer": a, "tokens": t} for a, t in zip(answers, tokens)]}
        for p, (answers, tokens, _) in zip(prompts, GOLD)}
    samples = [{"arguments": {"gen_args_0": {"arg_0": p, "arg_1": {}}}, "filter": f,
                "target": f"some working\n#### {gold}"}
               for p, (_, _, gold) in zip(prompts, GOLD) for f in ("strict", "flexible")]
    assert curves.curve_from_run(trace, samples) == curves.maj_at_k(HAND[:2])
    # scores given per candidate replace the answer check
    # (question 1: answers 1, 1, 2; every vote of 2 or 3 returns a sample answering 1)
    right = {prompt_sha(prompts[0]): [0.0, 0.0, 1.0], prompt_sha(prompts[1]): [1.0, 1.0, 1.0]}
    assert [p.accuracy for p in curves.curve_from_run(trace, samples, right)] == \
        [(1 / 3 + 1) / 2, (0 + 1) / 2, (0 + 1) / 2]
    with pytest.raises(ValueError, match="1 trace records match no sample"):
        curves.curve_from_run(trace, samples[:2])


def test_draw_curve_puts_every_k_with_its_stderr_band_on_the_axis():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    points = curves.maj_at_k(HAND)
    curves.draw_curve(ax, points, "C0", "sc maj@k")
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == pytest.approx([31 / 3, 62 / 3, 31])
    assert list(line.get_ydata()) == pytest.approx([500 / 9, 700 / 9, 200 / 3])
    assert line.get_label() == "sc maj@k"
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    # y ± stderr: (500 ± 100) / 9, (700 ± 200) / 9, (200 ± 100) / 3
    assert (min(ys), max(ys)) == pytest.approx((100 / 3, 100))
    assert [t.get_text() for t in ax.texts] == ["1", "2", "3"]
    plt.close(fig)


def test_hf_sc_curve_reads_each_response_with_the_tasks_filter(tmp_path, monkeypatch):
    """lm-eval's own self-consistency task: every response is read with its 'score-first'
    regex ('[invalid]' where it finds nothing, which votes, as in the task's majority_vote);
    ties go to the response sampled first; k = N is the task's maj@N."""
    import json

    data = tmp_path / "gsm8k"
    data.mkdir()
    rows = [{"question": "Two?", "answer": "1 + 1 = 2\n#### 5"},
            {"question": "Nine?", "answer": "#### 9"}]
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("SOFTREASON_DATA_DIR", str(tmp_path))
    name = "gsm8k_cot_self_consistency_offline"
    responses = [["The answer is 5.", "The answer is 4.", "I do not know."],  # gold 5
                 ["The answer is 9.", "The answer is 8.", "The answer is 8."]]  # gold 9
    samples = [{"doc_id": i, "doc": rows[i], "filter": f, "resps": [resp],
                "arguments": {"gen_args_0": {"arg_0": f"Q: {rows[i]['question']}\nA:",
                                             "arg_1": {"until": ["Q:"]}}}}
               for i, resp in enumerate(responses) for f in ("score-first", "maj@64", "maj@8")]
    points = curves.hf_sc_curve(name, samples, tokens_per_response=10.0)
    # question 1: right [1, 0, 0]; k=2: {5,4}->5, {5,inv}->5, {4,inv}->4; k=3: all differ -> 5
    # question 2: right [1, 0, 0]; k=2: {9,8}->9, {9,8}->9, {8,8}->8; k=3: 8 wins the vote
    assert [p.accuracy for p in points] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert [p.tokens for p in points] == [10.0, 20.0, 30.0]
    with pytest.raises(ValueError, match="has no filter 'nope'"):
        curves.hf_sc_curve(name, samples, 10.0, filter_name="nope")
