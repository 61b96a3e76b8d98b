"""The same guarantees on a GPU: run where CUDA is available, skipped elsewhere (e.g. CI)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.engines.hf import BatchDecoder, prefill
from tests.helpers import FAST, QUESTIONS, request

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def cuda_lm(tiny_model_dir):
    from lm_eval_softreason.harness.hf_model import SoftReasonLM

    return SoftReasonLM(pretrained=tiny_model_dir, device="cuda", batch_size=16, **FAST)


def test_zero_noise_rows_reproduce_hf_generate_on_cuda(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).to("cuda").eval()
    dec = BatchDecoder(model, tok, eos_token_ids=[], max_batch=8)
    emb = model.get_input_embeddings().weight
    rows = []
    for q in QUESTIONS:
        state = prefill(model, tok.encode(q))
        rows.append(DecodeRow(state, first_token=state.greedy_token,
                              first_embed=emb[state.greedy_token].detach().clone()))
    got = [r.tokens for r in dec.decode(rows, until=[], max_new_tokens=10)]
    for q, tokens in zip(QUESTIONS, got):
        ids = tok(q, return_tensors="pt").input_ids.to("cuda")
        ref = model.generate(ids, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        assert tokens == ref[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("mode", ["softreason", "sample", "fire", "cot_decoding"])
def test_every_mode_runs_on_cuda_without_fallbacks_and_repeats_itself(cuda_lm, mode):
    cuda_lm.configure(mode=mode, **FAST)
    reqs = [request(q) for q in QUESTIONS]
    first = cuda_lm.generate_until(reqs)
    stats = cuda_lm.get_model_info()["softreason_stats"]
    assert stats["fallbacks"] == 0, stats["fallback_reasons"]
    assert stats["tokens_generated"] > 0
    cuda_lm.configure(mode=mode, **FAST)
    assert cuda_lm.generate_until(reqs) == first
