"""CoT-decoding (Wang & Zhou 2024, ``mode=cot_decoding``): the ``top_k`` first tokens, each
continued greedily; the answer with the highest confidence (mean top-1/top-2 probability
margin over the answer's tokens) wins."""

from __future__ import annotations

import torch

from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.scoring.candidate import Generation
from lm_eval_softreason.strategies.base import OneRound
from lm_eval_softreason.strategies.config import SoftReasonConfig


class CotDecoding(OneRound):
    name = "cot_decoding"
    needs_spans = True

    @classmethod
    def rows_per_question(cls, cfg: SoftReasonConfig) -> int:
        return cfg.top_k

    @classmethod
    def first_token_logprobs(cls, cfg: SoftReasonConfig) -> int:
        return max(2, cfg.top_k)  # its branches, and the margin

    def observe(self, gens: list[Generation]) -> None:
        for g in gens:
            g.confidence = answer_confidence(g.margins, g.spans, g.text, g.answer)
        super().observe(gens)

    def rows(self) -> list[DecodeRow]:
        k = min(self.ctx.cfg.top_k, self.ctx.state.next_logits.numel())
        top = torch.topk(self.ctx.state.next_logits, k).indices.tolist()
        return [self.row(first_token=int(t)) for t in top]

    def ranked(self) -> list[Generation]:
        order = sorted(range(len(self.generations)),
                       key=lambda i: (-(self.generations[i].confidence or 0.0), i))
        return [self.generations[i] for i in order]


def answer_confidence(margins: list[float], token_spans: list[tuple[int, int]],
                      text: str, answer: str | None) -> float:
    """Mean margin over the tokens covering the answer's last occurrence in ``text``.

    ``token_spans`` are each token's (start, end) character offsets in ``text``. A candidate
    without a locatable answer gets confidence 0, so it never beats one with an answer.
    """
    if not answer:
        return 0.0
    start = text.rfind(answer)
    if start < 0:
        return 0.0
    end = start + len(answer)
    picked = [m for m, (a, b) in zip(margins, token_spans) if a < end and b > start]
    return sum(picked) / len(picked) if picked else 0.0
