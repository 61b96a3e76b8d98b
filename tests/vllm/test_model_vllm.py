"""``--model softreason-vllm`` end to end on the tiny model: the HF engine's greedy texts,
reproducible search and sampling, answers independent of the window, every mode.

Needs vLLM (its own virtualenv, see .ci/run); skipped without it.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")

from lm_eval_softreason.harness.hf_model import SoftReasonLM  # noqa: E402
from lm_eval_softreason.harness.vllm_model import SoftReasonVLLM  # noqa: E402
from tests.helpers import FAST, QUESTIONS, ROOT, request  # noqa: E402
from tests.vllm.test_engine_vllm import BLOCK, PROMPTS, build_vllm_tiny_model  # noqa: E402

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_vllm_tiny_model(str(tmp_path_factory.mktemp("tiny-llama-vllm-lm")))


@pytest.fixture(scope="module")
def vlm(model_dir):
    """Built the way lm-eval's evaluator builds a model: model_args plus its batch_size,
    max_batch_size and device."""
    args = {"pretrained": model_dir, "dtype": "float32", "enforce_eager": True,
            "max_model_len": 512, "block_size": BLOCK, **FAST}
    lm = SoftReasonVLLM.create_from_arg_obj(
        args, {"batch_size": "auto", "max_batch_size": None, "device": "cuda"})
    yield lm
    lm.engine.close()


@pytest.fixture(scope="module")
def hlm(model_dir):
    return SoftReasonLM(pretrained=model_dir, device="cpu", dtype="float32", batch_size=16,
                        **FAST)


def reqs(n: int = len(PROMPTS), **kw):
    return [request(p, max_gen_toks=16, **kw) for p in PROMPTS[:n]]


def test_greedy_texts_equal_the_hf_engines(vlm, hlm):
    vlm.configure(mode="greedy", **FAST)
    hlm.configure(mode="greedy", **FAST)
    assert vlm.generate_until(reqs()) == hlm.generate_until(reqs())


def test_a_zero_noise_search_returns_the_greedy_text(vlm):
    vlm.configure(mode="greedy", **FAST)
    greedy = vlm.generate_until(reqs())
    vlm.configure(sigma=1e-9, verifier="none", **FAST)
    assert vlm.generate_until(reqs()) == greedy


def test_softreason_is_reproducible_and_independent_of_the_window(vlm):
    answers = {}
    for max_active in (1, 3, len(PROMPTS)):
        vlm.configure(max_active=max_active, **FAST)
        answers[max_active] = vlm.generate_until(reqs())
    vlm.configure(max_active=3, **FAST)
    assert vlm.generate_until(reqs()) == answers[3]  # same seed, same samples
    assert answers[1] == answers[3] == answers[len(PROMPTS)]
    vlm.configure(seed=99, **FAST)
    assert vlm.generate_until(reqs()) != answers[3]


def test_sampling_is_reproducible_per_seed(vlm):
    vlm.configure(mode="sample", n_samples=3, **FAST)
    first = vlm.generate_until(reqs(3))
    assert vlm.generate_until(reqs(3)) == first
    vlm.configure(mode="sample", n_samples=3, seed=7, **FAST)
    assert vlm.generate_until(reqs(3)) != first


@pytest.mark.parametrize("mode", ["cot_decoding", "fire"])
def test_every_mode_runs(vlm, mode):
    vlm.configure(mode=mode, n_samples=2, top_k=2, **FAST)
    out = vlm.generate_until(reqs(2))
    stats = vlm.get_model_info()["softreason_stats"]
    assert len(out) == 2 and stats["questions"] == 2 and stats["fallbacks"] == 0
    assert stats["candidates"] == 4


def test_the_window_ignores_lm_evals_default_batch_size(vlm):
    """`--batch_size` defaults to 1 on lm-eval's CLI; on vLLM that must not shrink the window
    to one question: auto fills 256 rows (FAST: 3 candidates per round, so 85 questions)."""
    vlm.configure(**FAST)
    vlm.batch_size = 1
    try:
        assert vlm._max_active() == 256 // 3
    finally:
        vlm.batch_size = "auto"


def test_loglikelihood_requests_get_a_clear_error(vlm):
    from lm_eval.api.instance import Instance

    ll = Instance("loglikelihood", {}, (QUESTIONS[0], " 6"), idx=0)
    with pytest.raises(NotImplementedError, match="^softreason-vllm answers generate_until "
                       "requests only.*--model vllm, --model local-completions or "):
        vlm.loglikelihood([ll])


SHARED_GET_MODEL = os.path.join(ROOT, "..", "shared", "assets", "get-model")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(SHARED_GET_MODEL), reason="no ../shared/assets")
def test_smollm2_greedy_texts_equal_the_hf_engines(tmp_path_factory):
    """A real model and tokenizer (SmolLM2-135M-Instruct, built from ../shared/assets), chat
    template, float32: both engines write the same greedy text."""
    import subprocess
    import sys

    folder = str(tmp_path_factory.mktemp("smollm2") / "model")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep
           + os.environ.get("PATH", "")}
    subprocess.run([SHARED_GET_MODEL, "smollm2", folder], check=True, env=env, timeout=900)
    hf = SoftReasonLM(pretrained=folder, device="cpu", dtype="float32", batch_size=8,
                      mode="greedy")
    prompts = [hf.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    texts = hf.generate_until([request(p, max_gen_toks=48) for p in prompts])
    vl = SoftReasonVLLM(pretrained=folder, dtype="float32", enforce_eager=True,
                        max_model_len=1024, mode="greedy")
    try:
        assert vl.generate_until([request(p, max_gen_toks=48) for p in prompts]) == texts
    finally:
        vl.engine.close()
    assert all(t.strip() for t in texts)


def test_compare_runs_its_cells_on_the_vllm_engine(model_dir, hlm, tmp_path, monkeypatch):
    """``compare --engine vllm``: the cell records its engine, and its greedy text is the HF
    engine's (fp32) for the same prompt."""
    import json

    from lm_eval_softreason.analysis.compare import cli as compare_cli
    from tests.e2e.test_compare import SVAMP_ITEMS

    (tmp_path / "data" / "svamp").mkdir(parents=True)
    (tmp_path / "data" / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ITEMS))
    monkeypatch.setenv("SOFTREASON_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "out"
    assert compare_cli.main([
        "--model", model_dir, "--engine", "vllm", "--dtype", "float32", "--tasks", "svamp",
        "--strategies", "greedy", "--limit", "svamp=1:2", "--gen-kwargs", "max_gen_toks=8",
        "--extra-model-args", f"enforce_eager=True,max_model_len=512,block_size={BLOCK}",
        "--out", str(out)]) == 0
    cell = json.loads((out / "cells" / "svamp__greedy.json").read_text())
    assert cell["spec"]["engine"] == "vllm" and cell["n"] == 1
    (sample, *_) = [json.loads(line) for line in
                    (out / "cells" / "svamp__greedy.samples.jsonl").read_text().splitlines()]
    (context, gen_kwargs), = sample["arguments"]  # compare writes [[context, gen_kwargs]]
    hlm.configure(mode="greedy", **FAST)
    assert sample["resps"] == [[hlm.generate_until(
        [request(context, max_gen_toks=8, until=gen_kwargs["until"])])[0]]]
