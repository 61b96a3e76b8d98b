"""FIRE (Chen et al. 2024, ``mode=fire``): the first token sampled at ``fire_temperature``,
then greedy; ``n_samples`` of them, majority vote."""

from __future__ import annotations

from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.scoring.candidate import Generation
from lm_eval_softreason.strategies.base import OneRound
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.strategies.self_consistency import sample_first, vote_ranked


class Fire(OneRound):
    name = "fire"

    @classmethod
    def rows_per_question(cls, cfg: SoftReasonConfig) -> int:
        return cfg.n_samples

    def rows(self) -> list[DecodeRow]:
        cfg = self.ctx.cfg
        return [
            self.row(first_token=sample_first(self.ctx.state.next_logits, cfg.fire_temperature,
                                              self.ctx.generator(i)))
            for i in range(cfg.n_samples)
        ]

    def ranked(self) -> list[Generation]:
        return vote_ranked(self.generations)
