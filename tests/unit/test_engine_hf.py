"""The batched decoder against plain HF decoding: same tokens, alone or batched."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.engines.hf import BatchDecoder, _sample_inverse_cdf, prefill
from lm_eval_softreason.engines.output import eos_token_ids
from tests.helpers import QUESTIONS


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, tok


def hf_greedy(model, tok, text, n):
    ids = tok(text, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_rows_match_hf_generate(model_and_tok):
    model, tok = model_and_tok
    dec = BatchDecoder(model, tok, eos_token_ids=[], max_batch=8)
    states = [prefill(model, tok.encode(q)) for q in QUESTIONS]
    results = dec.decode([DecodeRow(s, first_token=s.greedy_token) for s in states], [], 20)
    for q, res in zip(QUESTIONS, results):
        assert res.tokens == hf_greedy(model, tok, q, 20)
        assert res.stop_reason == "max_tokens"


def test_zero_noise_embedding_reproduces_greedy_token_for_token(model_and_tok):
    model, tok = model_and_tok
    table = model.get_input_embeddings().weight.detach()
    dec = BatchDecoder(model, tok, eos_token_ids=[], max_batch=8)
    for q in QUESTIONS:
        s = prefill(model, tok.encode(q))
        soft = DecodeRow(s, first_token=s.greedy_token, first_embed=table[s.greedy_token].clone())
        assert dec.decode([soft], [], 20)[0].tokens == hf_greedy(model, tok, q, 20)


def test_a_scaled_embedding_models_table_reproduces_greedy(model_and_tok):
    """Gemma 3 multiplies looked-up rows by sqrt(hidden): the engine's table must carry that
    scale, or a zero-noise candidate (the greedy token's row) feeds a 16x smaller vector."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from lm_eval_softreason.engines.hf import HFEngine

    _, tok = model_and_tok
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)).eval()
    engine = HFEngine(model, tok, eos_token_ids=[], max_batch=8)
    ids = torch.arange(len(tok))
    table = engine.input_embeddings()
    assert torch.equal(table[ids], model.get_input_embeddings()(ids))
    assert not torch.equal(table, model.get_input_embeddings().weight)  # the scale is 16
    for q in QUESTIONS[:2]:
        s = engine.prefill(tok.encode(q))
        soft = DecodeRow(s, first_token=s.greedy_token, first_embed=table[s.greedy_token].clone())
        assert engine.decode([soft], [], 12)[0].tokens == hf_greedy(model, tok, q, 12)


def test_perturbed_rows_identical_batched_or_alone(model_and_tok):
    model, tok = model_and_tok
    table = model.get_input_embeddings().weight.detach()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for q in QUESTIONS:  # prompts of different lengths: exercises left padding
        s = prefill(model, tok.encode(q))
        for _ in range(3):
            noise = torch.randn(table.shape[1], generator=gen)
            rows.append(DecodeRow(s, first_token=s.greedy_token,
                                  first_embed=table[s.greedy_token] + noise))
    batched = BatchDecoder(model, tok, [tok.eos_token_id], max_batch=16).decode(rows, ["Q:"], 16)
    alone = BatchDecoder(model, tok, [tok.eos_token_id], max_batch=1).decode(rows, ["Q:"], 16)
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
    assert len({tuple(r.tokens) for r in batched}) > 3  # noise really changes the text
    for a, b in zip(batched, alone):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_prefix_prefill_equals_full_prefill(model_and_tok):
    model, tok = model_and_tok
    ids = tok.encode(QUESTIONS[1])
    full = prefill(model, ids)
    head = prefill(model, ids[:10])
    joined = prefill(model, ids[10:], prefix=head)
    assert joined.length == full.length and joined.prefilled_tokens == len(ids) - 10
    assert torch.allclose(joined.next_logits, full.next_logits, atol=1e-4)


def test_prefill_keeps_only_the_last_logits(model_and_tok):
    """The state's logits equal the last row of a full forward and own a vocab-sized buffer
    (not a view pinning prompt_len x vocab floats)."""
    model, tok = model_and_tok
    ids = tok.encode(QUESTIONS[2])
    state = prefill(model, ids)
    with torch.inference_mode():
        full = model(input_ids=torch.tensor([ids])).logits[0]
    assert full.shape[0] == len(ids) > 1
    assert torch.allclose(state.next_logits, full[-1].float(), atol=1e-5)
    assert state.next_logits.untyped_storage().nbytes() == full.shape[-1] * 4


def test_prefill_of_a_model_without_logits_to_keep(model_and_tok, monkeypatch):
    """Models whose forward lacks ``logits_to_keep`` get the full forward, same logits."""
    from lm_eval_softreason.engines import hf as decoding

    model, tok = model_and_tok
    ids = tok.encode(QUESTIONS[2])
    expected = prefill(model, ids).next_logits
    monkeypatch.setattr(decoding, "_keeps_last_logits_only", lambda cls: False)
    state = prefill(model, ids)
    assert torch.allclose(state.next_logits, expected, atol=1e-5)
    assert state.next_logits.untyped_storage().nbytes() == expected.shape[0] * 4


def test_stop_strings_and_virtual_first_token(model_and_tok):
    model, tok = model_and_tok
    s = prefill(model, tok.encode(QUESTIONS[0]))
    dec = BatchDecoder(model, tok, [], max_batch=4)
    free = dec.decode([DecodeRow(s, first_token=s.greedy_token)], [], 12)[0]
    stop_at = tok.decode(free.tokens[3:5])
    cut = dec.decode([DecodeRow(s, first_token=s.greedy_token)], [stop_at], 12)[0]
    assert cut.stop_reason == "stop_string" and len(cut.tokens) < 12
    assert stop_at in tok.decode(cut.tokens)
    virtual = DecodeRow(s, first_embed=torch.zeros(model.config.hidden_size))
    res = dec.decode([virtual], [], 5)[0]
    assert len(res.tokens) == 5 and len(res.logprobs) == 5  # nothing emitted for the vector


def test_oom_halves_the_batch_instead_of_failing(model_and_tok, monkeypatch, caplog):
    model, tok = model_and_tok
    dec = BatchDecoder(model, tok, [], max_batch=8)
    original = dec._decode_chunk

    def fussy(rows, until, n):
        if len(rows) > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return original(rows, until, n)

    monkeypatch.setattr(dec, "_decode_chunk", fussy)
    s = prefill(model, tok.encode(QUESTIONS[0]))
    out = dec.decode([DecodeRow(s, first_token=s.greedy_token)] * 6, [], 4)
    assert len(out) == 6 and dec.max_batch == 2
    assert "batch size lowered to 2" in caplog.text


def test_inverse_cdf_sampling_follows_the_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, float("-inf")]]).repeat(20000, 1)
    uniform = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    picked = _sample_inverse_cdf(logits, uniform)
    freq = torch.bincount(picked, minlength=4).double() / len(picked)
    expected = torch.softmax(logits[0].double(), -1)
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)
    assert freq[3] == 0
    edge = _sample_inverse_cdf(logits[:2], torch.tensor([0.0, 1.0 - 1e-16], dtype=torch.float64))
    assert edge.tolist() == [0, 2]  # u = 0 takes the first token; u -> 1 never a 0-prob one


def test_sampled_rows_identical_batched_or_alone(model_and_tok):
    model, tok = model_and_tok
    dec = BatchDecoder(model, tok, eos_token_ids=[], max_batch=8)
    states = [prefill(model, tok.encode(q)) for q in QUESTIONS]

    def rows():
        out = [DecodeRow(s, first_token=s.greedy_token, temperature=0.9,
                         seed=i) for i, s in enumerate(states)]
        return out + [DecodeRow(states[0], first_token=states[0].greedy_token)]

    together = [r.tokens for r in dec.decode(rows(), until=[], max_new_tokens=12)]
    alone = [dec.decode([r], until=[], max_new_tokens=12)[0].tokens for r in rows()]
    assert together == alone
    assert together[0] != together[-1]  # the sampled row left the greedy path


@pytest.mark.parametrize("tokenizer_eos, generation_eos, expected", [
    (2, None, [2]),
    (2, 2, [2]),
    (2, [7, 2], [2, 7]),
    (2, 0, [0, 2]),  # token id 0 is an EOS like any other
    (None, [5], [5]),
])
def test_the_eos_set_joins_tokenizer_and_generation_config(tokenizer_eos, generation_eos,
                                                           expected):
    assert eos_token_ids(tokenizer_eos, generation_eos) == expected
