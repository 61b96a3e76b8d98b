"""Soft Reasoning's per-question search: perturb the first token, verify, refine with BO.

Round 0 decodes ``n_init`` points of the initial design; each later round fits a GP to
(point, objective) (the runner runs all questions' fits together, see :meth:`proposal_request`)
and decodes the ``batch`` points qLogEI proposes (or random points for the
``search=random`` ablation), until the round's best objective improves the best so far by less
than ``epsilon``, the expected improvement drops below ``ei_threshold``, or ``max_rounds``
BO rounds have run.
"""

from __future__ import annotations

import math

import torch

from lm_eval_softreason.strategies.softreason.bayesopt import Proposal, ProposalRequest
from lm_eval_softreason.engines.base import DecodeRow
from lm_eval_softreason.scoring.verification import VerifyRequest, VerifyResult
from lm_eval_softreason.strategies.softreason.perturbation import EmbeddingSpace
from lm_eval_softreason.scoring.candidate import Generation
from lm_eval_softreason.scoring.selection import rank
from lm_eval_softreason.strategies.base import QuestionContext, Strategy
from lm_eval_softreason.strategies.config import SoftReasonConfig


class SoftReasonSearch(Strategy):
    name = "softreason"
    needs_verifier = True

    @classmethod
    def rows_per_question(cls, cfg: SoftReasonConfig) -> int:
        return max(cfg.n_init, cfg.batch)

    @classmethod
    def first_token_logprobs(cls, cfg: SoftReasonConfig) -> int:
        return 2  # the greedy token (z) and the first token's margin

    def __init__(self, ctx: QuestionContext) -> None:
        super().__init__(ctx)
        cfg = ctx.cfg
        self.first_token = ctx.state.greedy_token
        anchor = ctx.embeddings[self.first_token]
        self.space = EmbeddingSpace(anchor, cfg, ctx.generator(), ctx.embedding_std)
        self.pending = self.space.initial_points(cfg.n_init)
        self.points: list[torch.Tensor] = []
        self.round = 0
        self.best_so_far = -math.inf
        self.round_gens: list[Generation] = []
        self.expected_improvement: list[float] = []
        self.verifier_analyses: list[str] = []
        self.request: ProposalRequest | None = None

    def rows(self) -> list[DecodeRow]:
        first = self.first_token if self.ctx.cfg.inject == "perturb" else None
        return [self.row(first_token=first, first_embed=self.space.to_vector(u))
                for u in self.pending]

    def observe(self, gens: list[Generation]) -> None:
        for g in gens:
            g.round = self.round
            value = float(self.ctx.coherence(g.logprobs))
            if not math.isfinite(value) and self.ctx.cfg.w_coherence > 0:
                raise ValueError(f"coherence returned {value}")
            g.r_coherence = _quantise(value)
        self.round_gens = gens
        self.record(gens)
        self.points.extend(self.pending)

    def verify_request(self) -> VerifyRequest | None:
        if self.done or not self.round_gens:
            return None
        return VerifyRequest(
            question=self.ctx.prompt,
            candidates=[g.text for g in self.round_gens],
            answers=[g.answer for g in self.round_gens],
            task_name=self.ctx.task_name,
        )

    def observe_verification(self, result: VerifyResult) -> None:
        cfg = self.ctx.cfg
        if len(result.rewards) != len(self.round_gens):
            raise ValueError(f"verifier gave {len(result.rewards)} rewards for "
                             f"{len(self.round_gens)} candidates")
        for g, r in zip(self.round_gens, result.rewards):
            r = float(r)
            if not math.isfinite(r):
                raise ValueError(f"verifier returned {r}")
            g.r_verifier = r
            coherence = g.r_coherence if cfg.w_coherence > 0 else 0.0
            g.reward = _quantise(cfg.w_verifier * r + cfg.w_coherence * (coherence or 0.0))
        self.extra_votes.extend(result.votes())
        self.verifier_analyses.append(result.analysis)
        self.counters.tokens_generated += result.tokens_generated
        self.counters.verifier_tokens += result.tokens_generated
        self.counters.tokens_prefilled += result.tokens_prefilled
        self.counters.rounds = self.round + 1
        self._next_round()

    def _next_round(self) -> None:
        cfg = self.ctx.cfg
        round_best = max(g.reward for g in self.round_gens)  # type: ignore[type-var]
        improved = round_best - self.best_so_far
        self.best_so_far = max(self.best_so_far, round_best)
        self.round_gens = []
        if self.round >= 1 and improved < cfg.epsilon:
            return self.finish("converged")
        if self.round >= cfg.max_rounds:
            return self.finish("max_rounds")
        rewards = torch.tensor([g.reward for g in self.generations])
        if float(rewards.max() - rewards.min()) < 1e-12:
            # Nothing to learn from; more rounds would be random search. Treat as converged.
            return self.finish("flat_rewards")
        if cfg.search == "random":
            return self._start_round(self.space.random_points(cfg.batch))
        self.request = ProposalRequest(
            torch.stack(self.points), rewards, self.space.bounds, cfg.batch,
            seed=(self.ctx.seed + self.round + 1) % (2**31),
        )
        return None

    def _start_round(self, points: torch.Tensor) -> None:
        """The next round will decode ``points``; ``round`` counts only rounds that run."""
        self.round += 1
        self.pending = points

    def proposal_request(self) -> ProposalRequest | None:
        return self.request

    def observe_proposal(self, proposal: Proposal) -> None:
        self.request = None
        self.expected_improvement.append(proposal.expected_improvement)
        if proposal.expected_improvement < self.ctx.cfg.ei_threshold:
            return self.finish("ei_below_threshold")
        return self._start_round(proposal.points)

    def ranked(self) -> list[Generation]:
        return rank(self.generations, self.ctx.cfg.select, self.extra_votes)

    def trace(self) -> dict:
        out = super().trace()
        out["verifier_answers"] = self.extra_votes
        # What the verifier wrote, one string per verified round: whether its verdicts or
        # answers could be read at all is only visible here.
        out["verifier_analyses"] = self.verifier_analyses
        out["expected_improvement"] = self.expected_improvement
        return out


def _quantise(value: float) -> float:
    """Round to 1e-4. Batches of different shapes change log-probs by ~1e-7; unrounded, that
    noise would reach the GP and steer BO, so a question's result would depend on which other
    questions shared its batches."""
    return round(value, 4) if math.isfinite(value) else value
