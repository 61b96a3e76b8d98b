"""FIRE (Chen et al. 2024, ``mode=fire``): the first token sampled at ``fire_temperature``,
then greedy; ``n_samples`` of them, majority vote (self-consistency's rows and vote)."""

from __future__ import annotations

from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.strategies.self_consistency import SelfConsistency, sample_first


class Fire(SelfConsistency):
    name = "fire"

    def rows(self) -> list[DecodeRow]:
        cfg = self.ctx.cfg
        return [
            self.row(first_token=sample_first(self.ctx.state.next_logits, cfg.fire_temperature,
                                              self.ctx.generator(i)))
            for i in range(cfg.n_samples)
        ]
