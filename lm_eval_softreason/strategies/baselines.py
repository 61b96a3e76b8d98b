"""Baselines run through the same model class, prompts, stops and post-processing.

- ``sample``: self-consistency (Wang et al. 2023): ``n_samples`` samples at ``temperature``,
  majority vote over normalised answers; unparsed answers do not vote.
- ``fire``: FIRE (Chen et al. 2024): the first token sampled at ``fire_temperature``, then greedy;
  ``n_samples`` of them, majority vote.
- ``cot_decoding``: CoT-decoding (Wang & Zhou 2024): the ``top_k`` first tokens, each continued
  greedily; the answer with the highest confidence (mean top-1/top-2 probability margin over
  the answer's tokens) wins.
"""

from __future__ import annotations

import torch

from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.scoring.selection import Generation, majority
from lm_eval_softreason.scoring.answers import normalize_answer
from lm_eval_softreason.strategies.base import Strategy


class _OneRound(Strategy):
    """Strategies that decode one batch of rows and then choose."""

    def observe(self, gens: list[Generation]) -> None:
        self.record(gens)
        self.counters.rounds = 1
        self.finish("done")


def _sample_first(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> int:
    # on CPU: the seeded generator is a CPU one, whatever device the model is on
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


class SelfConsistency(_OneRound):
    name = "sample"

    def rows(self) -> list[DecodeRow]:
        cfg = self.ctx.cfg
        rows = []
        for i in range(cfg.n_samples):
            gen = self.ctx.generator(i)
            first = _sample_first(self.ctx.state.next_logits, cfg.temperature, gen)
            rows.append(self.row(first_token=first, temperature=cfg.temperature,
                                 seed=self.ctx.row_seed(i)))
        return rows

    def ranked(self) -> list[Generation]:
        return _vote_ranked(self.generations)


class Fire(_OneRound):
    name = "fire"

    def rows(self) -> list[DecodeRow]:
        cfg = self.ctx.cfg
        return [
            self.row(first_token=_sample_first(self.ctx.state.next_logits, cfg.fire_temperature,
                                               self.ctx.generator(i)))
            for i in range(cfg.n_samples)
        ]

    def ranked(self) -> list[Generation]:
        return _vote_ranked(self.generations)


class CotDecoding(_OneRound):
    name = "cot_decoding"
    needs_spans = True

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


def _vote_ranked(gens: list[Generation]) -> list[Generation]:
    """Majority answer's first sample first, then the rest in sampling order."""
    winner = majority([g.answer for g in gens])
    first = next((g for g in gens if winner is not None and normalize_answer(g.answer) == winner),
                 gens[0] if gens else None)
    return [] if first is None else [first] + [g for g in gens if g is not first]


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
