"""Self-consistency (Wang et al. 2023, ``mode=sample``): ``n_samples`` samples at
``temperature``, majority vote over normalised answers; unparsed answers do not vote."""

from __future__ import annotations

import torch

from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.scoring.candidate import Generation
from lm_eval_softreason.scoring.selection import majority_holder
from lm_eval_softreason.strategies.base import OneRound
from lm_eval_softreason.strategies.config import SoftReasonConfig


def sample_first(logits: torch.Tensor, temperature: float, gen: torch.Generator) -> int:
    """A first token drawn at ``temperature`` with the question's seeded generator."""
    # on CPU: the seeded generator is a CPU one, whatever device the model is on
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def vote_ranked(gens: list[Generation]) -> list[Generation]:
    """Majority answer's first sample first, then the rest in sampling order."""
    if not gens:
        return []
    first = gens[majority_holder([g.answer for g in gens])]
    return [first] + [g for g in gens if g is not first]


class SelfConsistency(OneRound):
    name = "sample"

    @classmethod
    def rows_per_question(cls, cfg: SoftReasonConfig) -> int:
        return cfg.n_samples

    def rows(self) -> list[DecodeRow]:
        cfg = self.ctx.cfg
        rows = []
        for i in range(cfg.n_samples):
            gen = self.ctx.generator(i)
            first = sample_first(self.ctx.state.next_logits, cfg.temperature, gen)
            rows.append(self.row(first_token=first, temperature=cfg.temperature,
                                 seed=self.ctx.row_seed(i)))
        return rows

    def ranked(self) -> list[Generation]:
        return vote_ranked(self.generations)
