"""SoftReasonLM.generate_until end to end on the tiny model."""

from __future__ import annotations

import json

import pytest
from lm_eval.models.huggingface import HFLM

from lm_eval_softreason.harness.hf_model import SoftReasonLM
from lm_eval_softreason.trace import read_trace
from tests import plugins
from tests.helpers import FAST, QUESTIONS, request


def test_greedy_mode_equals_stock_hflm(tiny_model_dir, configure):
    lm = configure(mode="greedy")
    reqs = [request(q, max_gen_toks=16) for q in QUESTIONS]
    stock = HFLM(pretrained=tiny_model_dir, device="cpu", batch_size=3)
    assert lm.generate_until(reqs) == stock.generate_until(reqs)


def test_search_is_deterministic_and_independent_of_limit_and_order(configure):
    lm = configure()
    a, b, c = (request(q) for q in QUESTIONS)
    first = lm.generate_until([a, b, c])
    assert lm.generate_until([a, b, c]) == first
    assert lm.generate_until([c, a]) == [first[2], first[0]]
    moved = request(QUESTIONS[1], doc_id=41)  # a different doc_id (another --limit/shard)
    assert lm.generate_until([moved]) == [first[1]]


def test_seed_changes_the_search(configure):
    reqs = [request(q) for q in QUESTIONS]
    one = configure(seed=1).generate_until(reqs)
    two = configure(seed=2).generate_until(reqs)
    assert one != two


def test_scoring_settings_leave_the_drawn_candidates_alone(configure, tmp_path):
    """Another verifier, coherence or weighting draws the same round-0 candidates, so
    ablating them is paired question by question; another seed draws others."""
    reqs = [request(q) for q in QUESTIONS]

    def round0(name: str, **kwargs: object) -> dict[str, list[str]]:
        configure(trace_path=str(tmp_path / name), **kwargs).generate_until(reqs)
        return {r["prompt_sha"]: [c["text"] for c in r["candidates"] if c["round"] == 0]
                for r in read_trace(tmp_path / name)}

    drawn = round0("default.jsonl")
    assert len(drawn) == len(QUESTIONS)
    assert round0("scored.jsonl", verifier="tests.plugins:always_first", coherence="none",
                  w_verifier=2.0) == drawn
    assert round0("seed.jsonl", seed=2) != drawn


def test_repeats_share_one_search_best_first(configure, tmp_path):
    lm = configure(trace_path=str(tmp_path / "t.jsonl"))
    reqs = [request(QUESTIONS[0], repeats=3)] * 3
    out = lm.generate_until(reqs)
    records = read_trace(tmp_path / "t.jsonl")
    assert len(records) == 1  # one search for the three repeats
    rec = records[0]
    ranked = sorted(rec["candidates"], key=lambda c: (-c["reward"], -c["r_coherence"]))
    assert out == [c["text"] for c in ranked[:3]]
    assert rec["candidates"][rec["chosen"]]["text"] == out[0]


def test_expected_improvement_stop_counts_the_rounds_that_ran(configure, tmp_path):
    """EI below the threshold at the first proposal: only round 0 ran, and the trace says 1."""
    lm = configure(trace_path=str(tmp_path / "t.jsonl"), max_rounds=3, ei_threshold=1e9)
    lm.generate_until([request(q) for q in QUESTIONS])
    records = read_trace(tmp_path / "t.jsonl")
    assert [r["stop_reason"] for r in records] == ["ei_below_threshold"] * 3
    assert [r["rounds"] for r in records] == [1, 1, 1]
    assert [len(r["expected_improvement"]) for r in records] == [1, 1, 1]
    assert [[c["round"] for c in r["candidates"]] for r in records] == [[0, 0, 0]] * 3
    assert lm.get_model_info()["softreason_stats"]["rounds"] == 3


def test_trace_and_model_info_record_the_search(configure, tmp_path, monkeypatch):
    """A fake clock that moves only in decode calls (1 s per candidate call, 1000 s per
    verifier call: one of each per round) makes every recorded time exact."""
    import time as time_module

    lm = configure(trace_path=str(tmp_path / "t.jsonl"))
    clock = [0.0]
    decode = lm.engine.decode

    def ticking(rows, until, max_new):
        clock[0] += {12: 1.0, 8: 1000.0}[max_new]
        return decode(rows, until, max_new)

    monkeypatch.setattr(time_module, "perf_counter", lambda: clock[0])
    lm.engine.decode = ticking
    try:
        lm.generate_until([request(q) for q in QUESTIONS[:2]])
    finally:
        del lm.engine.decode
    records = read_trace(tmp_path / "t.jsonl")
    assert len(records) == 2
    for rec in records:
        rounds = rec["rounds"]
        assert rec["strategy"] == "softreason" and rounds in (1, 2)  # max_rounds=1
        # n_init=3 candidates in round 0, batch=2 in the BO round; one verifier answer a round
        assert [c["round"] for c in rec["candidates"]] == [0] * 3 + [1] * 2 * (rounds - 1)
        assert len(rec["verifier_answers"]) == rounds
        assert {"text", "answer", "r_verifier", "r_coherence", "reward", "round", "tokens"} \
            <= set(rec["candidates"][0])
        assert rec["tokens_generated"] == (sum(c["tokens"] for c in rec["candidates"])
                                           + rec["verifier_tokens"])
        assert rec["wall_time_s"] == 1001.0 * rounds
    info = lm.get_model_info()
    assert info["softreason"]["mode"] == "softreason" and info["softreason"]["proj_dim"] == 8
    assert info["softreason_device"] == "cpu"  # where it ran, not lm-eval's --device echo
    stats = info["softreason_stats"]
    assert stats["questions"] == 2
    assert stats["wall_time_s"] == clock[0] == 1001.0 * max(r["rounds"] for r in records)
    for key in ("tokens_generated", "tokens_prefilled", "verifier_tokens"):
        assert stats[key] == sum(r[key] for r in records)


def test_pluggable_verifier_by_import_path_never_sees_gold(configure):
    plugins.CALLS.clear()
    lm = configure(verifier="tests.plugins:always_first", coherence="none")
    out = lm.generate_until([request(QUESTIONS[0], max_gen_toks=10)])
    assert plugins.CALLS, "custom verifier was not called"
    shown = plugins.CALLS[0]
    assert shown.question == QUESTIONS[0] and "secret gold" not in json.dumps(shown.__dict__)
    # Only the first candidate of each round is rewarded and coherence is off: it must win.
    assert out == [shown.candidates[0]]


def test_pluggable_callables_from_python(tiny_model_dir):
    seen = []

    def verifier(req):
        seen.append(len(req.candidates))
        return [0.0] * len(req.candidates)

    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", verifier=verifier,
                      coherence=plugins.length_coherence, **FAST)
    lm.generate_until([request(QUESTIONS[1])])
    # all three candidates run to the 12-token budget: length coherence and the verifier are
    # flat, so the search stops after the first round's single verifier call
    assert seen == [3]
    assert lm.get_model_info()["softreason"]["coherence"].endswith("length_coherence")
    assert lm.get_model_info()["softreason_stats"]["rounds"] == 1


@pytest.mark.parametrize("mode", ["sample", "fire", "cot_decoding"])
def test_baseline_modes_run_and_count_tokens(configure, mode, tmp_path):
    lm = configure(mode=mode, n_samples=3, top_k=3, trace_path=str(tmp_path / "t.jsonl"))
    out = lm.generate_until([request(q) for q in QUESTIONS[:2]])
    records = read_trace(tmp_path / "t.jsonl")
    stats = lm.get_model_info()["softreason_stats"]
    assert len(out) == 2 and stats["questions"] == 2
    assert [len(r["candidates"]) for r in records] == [3, 3] and stats["candidates"] == 6
    # no verifier: generated = the candidates' tokens, prefilled = each prompt once
    assert stats["tokens_generated"] == sum(c["tokens"] for r in records
                                            for c in r["candidates"])
    assert stats["tokens_prefilled"] == sum(len(lm.tok_encode(q)) for q in QUESTIONS[:2])


def test_sample_mode_is_seeded(configure, tmp_path):
    """The same seed draws the same samples; the samples really are sampled (they differ
    from each other and from the greedy answer), and another seed draws others."""
    reqs = [request(QUESTIONS[0])]

    def samples(name: str, **kwargs: object) -> tuple[list[str], list[str]]:
        lm = configure(trace_path=str(tmp_path / name), **kwargs)
        out = lm.generate_until(reqs)
        (record,) = read_trace(tmp_path / name)
        return out, [c["text"] for c in record["candidates"]]

    out, texts = samples("a.jsonl", mode="sample", n_samples=3)
    assert samples("b.jsonl", mode="sample", n_samples=3) == (out, texts)
    (greedy,) = configure(mode="greedy").generate_until(reqs)
    assert len(set(texts)) == 3 and greedy not in texts
    assert samples("c.jsonl", mode="sample", n_samples=3, seed=7)[1] != texts


def test_one_questions_rows_share_a_batch_whatever_batch_size_says(tiny_model_dir):
    """lm-eval passes batch_size=1 when the flag is left out; it counts requests, and a
    question is one request, so its candidates still decode as one batch (not one by one)."""
    from lm_eval_softreason.harness.hf_model import SoftReasonLM
    from tests.helpers import FAST, QUESTIONS, request

    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", batch_size=1,
                      **{**FAST, "verifier": "single_generate"})
    sizes: list[int] = []
    chunk = lm.engine.decoder._decode_chunk
    lm.engine.decoder._decode_chunk = lambda rows, *a: sizes.append(len(rows)) or chunk(rows, *a)
    lm.generate_until([request(QUESTIONS[0])])
    # initial round: 3 candidates, then their 3 verifier prompts; the BO round: 2 and 2
    assert (lm.engine.decoder.max_batch, sizes) == (3, [3, 3, 2, 2])
    lm.configure(mode="sample", n_samples=4)
    sizes.clear()
    lm.generate_until([request(QUESTIONS[0])])
    assert (lm.engine.decoder.max_batch, sizes) == (4, [4])
