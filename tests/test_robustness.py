"""Bad input and failing plug-ins: the affected question falls back, the others are unchanged."""

from __future__ import annotations

import math

import pytest
from lm_eval.api.model import CachingLM

from lm_eval_softreason import bayesopt
from lm_eval_softreason.bayesopt import GPFitError
from lm_eval_softreason.config import ConfigError
from lm_eval_softreason.model import SoftReasonLM
from lm_eval_softreason.trace import TraceWriter, read_trace
from tests.helpers import FAST, QUESTIONS, request


@pytest.fixture(scope="module")
def greedy_out(lm):
    lm.configure(mode="greedy", **FAST)
    out = lm.generate_until([request(q) for q in QUESTIONS])
    lm.configure(**FAST)
    return out


@pytest.fixture(scope="module")
def search_out(lm):
    lm.configure(**FAST)
    return lm.generate_until([request(q) for q in QUESTIONS])


def selective_verifier(req):
    """Fails only for the second question."""
    if "chocolates" in req.question:
        raise RuntimeError("verifier exploded")
    return [float(a is not None) for a in req.answers]


def nan_for_trees(req):
    return [math.nan if "trees" in req.question else 0.5 for _ in req.candidates]


@pytest.mark.parametrize("verifier, broken", [(selective_verifier, 1), (nan_for_trees, 0)])
def test_failing_verifier_affects_only_its_question(tiny_model_dir, greedy_out, verifier, broken):
    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", verifier=verifier, **FAST)
    reqs = [request(q) for q in QUESTIONS]
    out = lm.generate_until(reqs)
    assert out[broken] == greedy_out[broken]
    stats = lm.get_model_info()["softreason_stats"]
    assert stats["fallbacks"] == 1
    # the question nobody broke gets exactly what a run without the broken one gives it
    assert out[2] == lm.generate_until([reqs[2]])[0]


@pytest.mark.parametrize("coherence", ["tests.plugins:raising_coherence",
                                       "tests.plugins:inf_coherence"])
def test_failing_coherence_falls_back_to_greedy(configure, greedy_out, coherence):
    lm = configure(coherence=coherence)
    assert lm.generate_until([request(q) for q in QUESTIONS]) == greedy_out
    assert lm.get_model_info()["softreason_stats"]["fallbacks"] == 3


def test_a_failing_bo_step_affects_only_its_question(configure, search_out, monkeypatch,
                                                     caplog):
    real = bayesopt.propose
    calls = []

    def first_one_breaks(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(bayesopt, "propose", first_one_breaks)
    lm = configure()
    out = lm.generate_until([request(q) for q in QUESTIONS])
    assert len(calls) >= 2  # several questions asked for a BO step in the same round
    stats = lm.get_model_info()["softreason_stats"]
    assert stats["fallbacks"] == 1
    assert stats["fallback_reasons"] == {"proposing the next points": 1}
    assert "proposing the next points: RuntimeError: boom" in caplog.text
    assert sum(o == s for o, s in zip(out, search_out)) >= len(QUESTIONS) - 1


def test_gp_failure_falls_back_and_is_counted(configure, greedy_out, search_out, monkeypatch,
                                              caplog):
    def broken(*args, **kwargs):
        raise GPFitError("GP fit failed: singular")

    monkeypatch.setattr(bayesopt, "propose", broken)
    lm = configure()
    out = lm.generate_until([request(q) for q in QUESTIONS])
    stats = lm.get_model_info()["softreason_stats"]
    falls = stats["fallbacks"]
    # questions whose search stopped before needing the GP keep their search result
    for i in range(3):
        assert out[i] in (greedy_out[i], search_out[i])
    assert falls == sum(o == g != s for o, g, s in zip(out, greedy_out, search_out)) or falls >= 1
    if falls:
        assert "GP fit failed" in caplog.text


def test_empty_generation_falls_back(configure):
    lm = configure(mode="greedy")
    probe = lm.generate_until([request(QUESTIONS[0], max_gen_toks=4)])[0]
    first_piece = probe[:1]
    lm = configure()
    # every candidate stops at once on this stop string -> empty text -> greedy fallback
    lm.generate_until([request(QUESTIONS[0], max_gen_toks=4, until=[first_piece])])
    reasons = lm.get_model_info()["softreason_stats"]["fallback_reasons"]
    assert reasons.get("empty generation", 0) <= 1


def test_prompt_longer_than_context_falls_back_to_truncated_greedy(tiny_model_dir):
    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", max_length=48, **FAST)
    long_prompt = " ".join(QUESTIONS * 4)
    out = lm.generate_until([request(long_prompt, max_gen_toks=8), request(QUESTIONS[0], max_gen_toks=8)])
    assert len(out) == 2
    assert lm.get_model_info()["softreason_stats"]["fallback_reasons"] == {
        "prompt of 40+ tokens longer than the context (40)": 1
    } or any(k.startswith("prompt of") for k in lm.get_model_info()["softreason_stats"]["fallback_reasons"])


def test_use_cache_refuses_another_configuration(configure, tmp_path):
    db = str(tmp_path / "cache.db")
    lm = configure(sigma=0.5)
    cached = CachingLM(lm, db)
    first = cached.generate_until([request(QUESTIONS[0])])
    assert CachingLM(lm, db).generate_until([request(QUESTIONS[0])]) == first  # same config ok
    lm = configure(sigma=0.25)
    with pytest.raises(ValueError, match=r"different softreason configuration.*sigma"):
        CachingLM(lm, db)


def test_use_cache_refuses_a_database_of_another_model(configure, tmp_path):
    from sqlitedict import SqliteDict

    db = str(tmp_path / "hf.db")
    with SqliteDict(db, autocommit=True) as d:
        d["some-hash"] = "an answer written by --model hf"
    with pytest.raises(ValueError, match="no softreason configuration"):
        CachingLM(configure(), db)


def test_bad_model_args_fail_before_loading(tmp_path):
    missing = str(tmp_path / "no-model-here")
    for args, fragment in [
        ({"sigma": -1}, "sigma=-1.0 is out of range"),
        ({"verifier": "nope.mod:fn"}, "cannot import 'nope.mod'"),
        ({"coherence": "math:pi"}, "'pi' is not callable"),
        ({"mode": "beam"}, "mode='beam' is invalid"),
        ({"batch": 0}, "batch=0 is out of range"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            SoftReasonLM(pretrained=missing, **args)  # a model load would fail differently


def test_interrupted_trace_is_repaired_on_rerun(tmp_path):
    path = tmp_path / "trace.jsonl"
    w = TraceWriter(path)
    w.write({"q": 1})
    w.close()
    with open(path, "a") as fh:
        fh.write('{"q": 2, "cand')  # killed mid-line
    w = TraceWriter(path)
    assert w.repaired_bytes > 0
    w.write({"q": 3})
    w.close()
    assert read_trace(path) == [{"q": 1}, {"q": 3}]
