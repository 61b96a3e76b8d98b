"""Bad input and failing plug-ins: the affected question falls back, the others are unchanged."""

from __future__ import annotations

import math

import pytest
from lm_eval.api.model import CachingLM
from lm_eval.models.huggingface import HFLM

from lm_eval_softreason.strategies.softreason import bayesopt
from lm_eval_softreason.strategies.softreason.bayesopt import GPFitError
from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.errors import RunRefused
from lm_eval_softreason.harness.hf_model import SoftReasonLM
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


@pytest.mark.fault("every question of a call falls back to greedy (a broken plug-in)",
                   "the run is refused (a user error: one line), naming the reasons")
@pytest.mark.parametrize("coherence", ["tests.plugins:raising_coherence",
                                       "tests.plugins:inf_coherence"])
def test_a_run_where_every_question_fell_back_is_refused(configure, coherence):
    lm = configure(coherence=coherence)
    with pytest.raises(RunRefused, match=r"all 3 questions fell back to plain greedy decoding"
                                           r".*reasons: \{'scoring candidates': 3\}"):
        lm.generate_until([request(q) for q in QUESTIONS])
    assert lm.get_model_info()["softreason_stats"]["fallbacks"] == 3


def test_fallbacks_above_the_threshold_warn_and_are_recorded(tiny_model_dir, greedy_out, caplog):
    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", verifier=selective_verifier,
                      max_fallback_rate=0.3, **FAST)
    out = lm.generate_until([request(q) for q in QUESTIONS])
    assert out[1] == greedy_out[1]
    # the question's fallback is logged once, with its reason (the runner's _fail)
    assert [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()] == [
        "question falls back to greedy (verifying: RuntimeError: verifier exploded)"]
    expected = ("softreason: 1 of 3 questions (33%) fell back to plain greedy decoding, more "
                "than max_fallback_rate=0.3; reasons: {'verifying': 1}. These results are "
                "partly greedy's.")
    assert lm.get_model_info()["softreason_stats"]["warnings"] == [expected]
    assert expected in caplog.text
    lm.configure(verifier=selective_verifier, max_fallback_rate=0.34, **FAST)
    lm.generate_until([request(q) for q in QUESTIONS])
    assert lm.get_model_info()["softreason_stats"]["warnings"] == []


def test_a_failing_bo_step_affects_only_its_question(configure, greedy_out, search_out,
                                                     monkeypatch, caplog):
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
    assert len(calls) == len(QUESTIONS)  # every question asked for one BO step (max_rounds=1)
    stats = lm.get_model_info()["softreason_stats"]
    assert stats["fallbacks"] == 1
    assert stats["fallback_reasons"] == {"proposing the next points": 1}
    assert "proposing the next points: RuntimeError: boom" in caplog.text
    # the first question to ask fell back to greedy; the others searched as without the fault
    assert out == [greedy_out[0], *search_out[1:]]


def test_gp_failures_everywhere_are_refused_not_reported(configure, monkeypatch):
    def broken(*args, **kwargs):
        raise GPFitError("GP fit failed: singular")

    monkeypatch.setattr(bayesopt, "propose", broken)
    lm = configure()
    with pytest.raises(RuntimeError, match=r"reasons: \{'proposing the next points': 3\}"):
        lm.generate_until([request(q) for q in QUESTIONS])


def test_empty_generation_falls_back(configure, search_out):
    lm = configure(mode="greedy")
    probe = lm.generate_until([request(QUESTIONS[0], max_gen_toks=4)])[0]
    lm = configure()
    # every candidate stops at once on this stop string -> empty text -> greedy fallback
    out = lm.generate_until([request(QUESTIONS[0], max_gen_toks=4, until=[probe[:1]]),
                             request(QUESTIONS[1])])
    assert out == ["", search_out[1]]
    assert lm.get_model_info()["softreason_stats"]["fallback_reasons"] == {"empty generation": 1}


def test_prompt_longer_than_context_falls_back_to_truncated_greedy(tiny_model_dir):
    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", max_length=48, **FAST)
    long_prompt = " ".join(QUESTIONS * 4)
    n_tokens = len(lm.tok_encode(long_prompt))
    out = lm.generate_until([request(long_prompt, max_gen_toks=8),
                             request(QUESTIONS[0], max_gen_toks=8)])
    stock = HFLM(pretrained=tiny_model_dir, device="cpu", max_length=48)
    assert out[0] == stock.generate_until([request(long_prompt, max_gen_toks=8)])[0]
    assert n_tokens > 40
    assert lm.get_model_info()["softreason_stats"]["fallback_reasons"] == {
        "prompt longer than the context": 1}


@pytest.mark.fault("max_gen_toks that leaves no room for the prompt in max_length",
                   "refused before any decoding, naming both values")
def test_max_gen_toks_beyond_the_context_is_refused_before_any_work(tiny_model_dir):
    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", max_length=48, **FAST)
    with pytest.raises(ValueError, match=r"max_gen_toks=48 does not fit the model's context of "
                                         r"max_length=48 tokens"):
        lm.generate_until([request(QUESTIONS[0], max_gen_toks=8),
                           request(QUESTIONS[1], max_gen_toks=48)])
    assert lm.get_model_info()["softreason_stats"]["questions"] == 0


@pytest.mark.fault("--use_cache written under another softreason configuration",
                   "refused, naming the database and the differing settings")
def test_use_cache_refuses_another_configuration(configure, tmp_path):
    db = str(tmp_path / "cache.db")
    lm = configure(sigma=0.5)
    cached = CachingLM(lm, db)
    first = cached.generate_until([request(QUESTIONS[0])])
    assert CachingLM(lm, db).generate_until([request(QUESTIONS[0])]) == first  # same config ok
    lm = configure(sigma=0.25)
    with pytest.raises(ValueError, match=r"different softreason configuration.*sigma"):
        CachingLM(lm, db)


@pytest.mark.fault("--model softreason on a --use_cache written by another model",
                   "refused: the database has no softreason configuration")
def test_use_cache_refuses_a_database_of_another_model(configure, tmp_path):
    from sqlitedict import SqliteDict

    db = str(tmp_path / "hf.db")
    with SqliteDict(db, autocommit=True) as d:
        d["some-hash"] = "an answer written by --model hf"
    with pytest.raises(ValueError, match="no softreason configuration"):
        CachingLM(configure(), db)


@pytest.mark.fault("a bad model_arg (out of range, unknown choice, unimportable plug-in)",
                   "refused before the model loads, naming the argument and the value")
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


@pytest.mark.fault("a trace whose last line was cut off by a kill",
                   "the partial line is cut off and the next run appends")
def test_interrupted_trace_is_repaired_on_rerun(tmp_path):
    path = tmp_path / "trace.jsonl"
    w = TraceWriter(path)
    w.write({"q": 1})
    w.close()
    with open(path, "a") as fh:
        fh.write('{"q": 2, "cand')  # killed mid-line
    w = TraceWriter(path)
    assert w.repaired_bytes == len('{"q": 2, "cand')
    w.write({"q": 3})
    w.close()
    assert read_trace(path) == [{"q": 1}, {"q": 3}]


@pytest.mark.parametrize("args, message", [
    ({"coherence": "tests.plugins:two_argument_coherence"},
     r"model_arg coherence=tests.plugins:two_argument_coherence: it takes \(logprobs, length\), "
     r"so it cannot be called as fn\(logprobs: list\[float\]\) -> float"),
    ({"verifier": "tests.plugins:no_argument_verifier"},
     r"model_arg verifier=tests.plugins:no_argument_verifier: it takes \(\), so it cannot be "
     r"called as fn\(request: VerifyRequest\)"),
])
def test_plugins_that_cannot_take_the_documented_arguments_are_refused_at_load(tmp_path, args,
                                                                              message):
    with pytest.raises(ConfigError, match=message):
        SoftReasonLM(pretrained=str(tmp_path / "never-loaded"), **args)


@pytest.mark.fault("torchrun/accelerate launch with processes lm-eval did not shard",
                   "refused before any decoding, naming the process counts")
def test_a_launch_lm_eval_did_not_shard_is_refused(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"launched as 2 processes \(WORLD_SIZE=2\), but "
                                           r"lm-eval split the requests over 1"):
        SoftReasonLM(pretrained=tiny_model_dir, device="cpu", **FAST)


@pytest.mark.parametrize("other, changed", [({"max_length": 512}, "max_length"),
                                            ({"dtype": "bfloat16"}, "dtype")])
def test_use_cache_refuses_another_model_setting(tiny_model_dir, tmp_path, other, changed):
    db = str(tmp_path / "cache.db")
    lm = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", **FAST)
    CachingLM(lm, db).generate_until([request(QUESTIONS[0])])
    again = SoftReasonLM(pretrained=tiny_model_dir, device="cpu", **FAST, **other)
    with pytest.raises(ValueError, match=rf"differences, cached vs now: \{{'{changed}': "):
        CachingLM(again, db)


def test_weights_fingerprint_changes_with_the_weight_files(tiny_model_dir, tmp_path):
    import shutil

    from lm_eval_softreason.harness.cache_guard import weights_fingerprint as _weights_fingerprint

    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert _weights_fingerprint(str(copy)) == _weights_fingerprint(tiny_model_dir)
    (copy / "tokenizer.json").write_text("{}")  # not a weight file: same fingerprint
    assert _weights_fingerprint(str(copy)) == _weights_fingerprint(tiny_model_dir)
    with open(next(copy.glob("*.safetensors")), "ab") as fh:
        fh.write(b"\0" * 8)  # same path, same config, other weights
    assert _weights_fingerprint(str(copy)) != _weights_fingerprint(tiny_model_dir)
    assert _weights_fingerprint("org/hub-model") is None


@pytest.mark.fault("model rebuilt in place at the same file sizes, same --use_cache",
                   "refused: the cache guard names `weights` among the differences")
def test_use_cache_refuses_a_model_rebuilt_in_place(tmp_path, monkeypatch):
    from tests.conftest import build_tiny_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model, db = build_tiny_model(str(tmp_path / "model")), str(tmp_path / "cache.db")
    CachingLM(SoftReasonLM(pretrained=model, device="cpu", **FAST), db).generate_until(
        [request(QUESTIONS[0])])
    sizes = sorted(p.stat().st_size for p in (tmp_path / "model").iterdir())
    build_tiny_model(model, seed=1)  # another seed: other weights, the same files and sizes
    assert sorted(p.stat().st_size for p in (tmp_path / "model").iterdir()) == sizes
    again = SoftReasonLM(pretrained=model, device="cpu", **FAST)
    with pytest.raises(ValueError, match=r"differences, cached vs now: \{'weights': "):
        CachingLM(again, db)


def test_weight_hashes_are_remembered_per_path_size_and_mtime(tmp_path, monkeypatch):
    import json
    import os

    from lm_eval_softreason.harness.cache_guard import file_sha256

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256("abc")
    assert file_sha256(weights) == expected
    store = tmp_path / "xdg" / "lm_eval_softreason" / "sha256.json"
    [key] = json.loads(store.read_text())
    store.write_text(json.dumps({key: "remembered"}))
    assert file_sha256(weights) == "remembered"  # same path, size and mtime: not read again
    os.utime(weights, ns=(0, 0))  # touched: hashed afresh
    assert file_sha256(weights) == expected
    store.write_text("not json")  # a broken store costs a rehash, never an error
    assert file_sha256(weights) == expected


def test_a_fallback_reads_as_the_text_traces_and_stats_record():
    from lm_eval_softreason.strategies.fallback import PROMPT_NOT_RUN, Fallback, recorded_stage

    oom = Fallback.of("decoding", RuntimeError("out of memory: 2 GiB"))
    assert (oom.stage, oom.error_type, oom.message) == ("decoding", "RuntimeError",
                                                        "out of memory: 2 GiB")
    assert str(oom) == "decoding: RuntimeError: out of memory: 2 GiB"
    assert recorded_stage(str(oom)) == "decoding"
    assert str(Fallback.of("verifying", ValueError())) == "verifying: ValueError: "
    assert str(Fallback("prompt longer than the context", message="9 tokens, 4 fit")) == \
        "prompt longer than the context: 9 tokens, 4 fit"
    assert str(PROMPT_NOT_RUN) == "prompt could not be run"
