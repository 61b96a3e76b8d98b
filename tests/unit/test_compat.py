"""compat.py: the one place that knows dependency internals and version-specific names."""

from __future__ import annotations

import warnings

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_softreason import compat
from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.engines.hf import BatchDecoder, prefill
from tests.helpers import QUESTIONS


class _OldForward:
    def forward(self, input_ids=None, past_key_values=None):  # type: ignore[no-untyped-def]
        """transformers before the ``cache`` argument."""


class _NewForward:
    def forward(self, input_ids=None, cache=None):  # type: ignore[no-untyped-def]
        """transformers with the ``cache`` argument."""


def test_cache_argument_follows_the_model_signature() -> None:
    assert compat.cache_arg(_OldForward(), "c") == {"past_key_values": "c"}  # type: ignore[arg-type]
    assert compat.cache_arg(_NewForward(), "c") == {"cache": "c"}  # type: ignore[arg-type]


def test_cache_round_trip_and_row_selection(tiny_model_dir: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    cfg = model.config
    shape = (3, cfg.num_key_value_heads, 4, cfg.hidden_size // cfg.num_attention_heads)
    layers = [(torch.randn(shape), torch.randn(shape)) for _ in range(cfg.num_hidden_layers)]
    cache = compat.new_cache(model, layers)
    assert all(torch.equal(k, k2) and torch.equal(v, v2)
               for (k, v), (k2, v2) in zip(layers, compat.cache_layers(cache)))
    compat.keep_rows(cache, torch.tensor([2, 0]))
    assert all(torch.equal(k, layers[i][0][[2, 0]]) and torch.equal(v, layers[i][1][[2, 0]])
               for i, (k, v) in enumerate(compat.cache_layers(cache)))


def test_prefill_and_decode_pass_no_deprecated_argument(tiny_model_dir: str) -> None:
    """transformers warns (FutureWarning) on ``past_key_values`` where it has ``cache``."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        ids = tok.encode(QUESTIONS[0])
        state = prefill(model, ids[5:], prefix=prefill(model, ids[:5]))
        whole = prefill(model, ids)
        assert torch.allclose(state.next_logits, whole.next_logits, atol=1e-5)
        rows = [DecodeRow(state, first_token=state.greedy_token), DecodeRow(
            whole, first_token=whole.greedy_token, temperature=1.0, seed=1)]
        results = BatchDecoder(model, tok, eos_token_ids=[], max_batch=2).decode(rows, [], 6)
    assert [len(r.tokens) for r in results] == [6, 6]
