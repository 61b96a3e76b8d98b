"""``engines/embeds.py`` with a scripted backend: which rows go as token ids, and a row the
backend stopped at a stop string the HF rule does not see is resumed, not cut."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.engines.embeds import Continuation, EmbedsEngine, Generated


class Scripted(EmbedsEngine):
    """Answers each backend call from a script; records what it was sent."""

    def __init__(self, tokenizer, script: list[Generated]) -> None:  # type: ignore[no-untyped-def]
        self.tokenizer = tokenizer
        self.dtype = torch.float32
        self.eos = [int(tokenizer.eos_token_id)]
        self.vocab_size, self.hidden_size = len(tokenizer), 4
        self._table = torch.randn(self.vocab_size, 4, generator=torch.Generator().manual_seed(0))
        self.script, self.sent = list(script), []

    def _first_position(self, prompts, keys):  # type: ignore[no-untyped-def]
        return [torch.log_softmax(torch.arange(self.vocab_size, dtype=torch.float32), 0)
                for _ in prompts]

    def _continue(self, jobs: list[Continuation]) -> list[Generated]:
        self.sent.append(jobs)
        return [self.script.pop(0) for _ in jobs]


def words(tok, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return tok.encode(text, add_special_tokens=False)


def generated(ids: list[int], reason: str) -> Generated:
    return Generated(tokens=ids, logprobs=[-1.0] * len(ids), margins=[0.5] * len(ids),
                     reason=reason)


def test_a_stop_only_the_backend_saw_is_resumed_as_the_hf_engine_would(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    first, more, rest = words(tok, "The")[0], words(tok, " trees"), words(tok, " grove")
    eng = Scripted(tok, [generated(more, "stop_string"), generated(rest, "max_tokens")])
    state = eng.prefill(words(tok, "Q: How many trees?"))
    (res,) = eng.decode([DecodeRow(state, first_token=first)], ["Q:"], 12)
    assert res.tokens == [first, *more, *rest] and res.stop_reason == "max_tokens"
    (sent,), (resumed,) = eng.sent
    assert sent.token_ids == (*state.token_ids, first) and sent.max_tokens == 11
    assert resumed.token_ids == (*state.token_ids, first, *more)
    assert resumed.max_tokens == 11 - len(more)
    assert resumed.embeds.shape[0] == state.length + 1 + len(more)


def test_a_stop_the_hf_rule_also_sees_ends_the_row(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    first, more = words(tok, "The")[0], words(tok, " answer Q: next")
    eng = Scripted(tok, [generated(more, "stop_string")])
    (res,) = eng.decode([DecodeRow(eng.prefill(words(tok, "Q: 2+2?")), first_token=first)],
                        ["Q:"], 12)
    assert res.stop_reason == "stop_string" and len(eng.sent) == 1
    assert "Q:" in tok.decode(res.tokens) and not tok.decode(res.tokens[:-1]).endswith("Q:")


def test_vectors_and_samples_go_as_embeddings_the_rest_as_token_ids(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eng = Scripted(tok, [generated([5], "max_tokens")] * 3)
    state = eng.prefill(words(tok, "Q: 2+2?"))
    eng.decode([DecodeRow(state, first_token=7),
                DecodeRow(state, first_token=7, first_embed=torch.zeros(4)),
                DecodeRow(state, first_token=7, temperature=0.7, seed=1)], [], 4)
    (greedy, vector, sampled), = eng.sent
    assert greedy.token_ids == (*state.token_ids, 7)
    assert vector.token_ids is None and sampled.token_ids is None
    assert torch.equal(vector.embeds[-1], torch.zeros(4))
