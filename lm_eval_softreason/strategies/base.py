"""The per-question interface every decoding strategy implements, and plain greedy.

A strategy is a small state machine: the lock-step runner asks every active question for rows
to decode, decodes all of them as shared batches, hands each question its results (and, if it
asks, a verifier verdict and then a BO proposal), and repeats until every question is done.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from lm_eval_softreason.strategies.softreason.bayesopt import Proposal, ProposalRequest
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.strategies.fallback import Fallback
from lm_eval_softreason.engines.base import DecodeRow, PromptState
from lm_eval_softreason.scoring.candidate import Generation
from lm_eval_softreason.scoring.coherence import CoherenceFn
from lm_eval_softreason.scoring.verification import VerifyRequest, VerifyResult


@dataclass
class QuestionContext:
    """What a strategy knows about its question (never the gold answer)."""

    prompt: str
    state: PromptState
    task_name: str
    seed: int
    cfg: SoftReasonConfig
    coherence: CoherenceFn
    extract: Callable[[str], str | None]
    embeddings: torch.Tensor  # the model's input embedding table
    embedding_std: float
    until: tuple[str, ...] = ()
    max_new_tokens: int = 256

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed + offset) % (2**63))

    def row_seed(self, index: int) -> int:
        """Seed of candidate ``index``'s sampling stream, distinct from :meth:`generator`'s."""
        return (self.seed ^ (0x9E3779B97F4A7C15 * (index + 1))) % (2**63)


@dataclass
class Counters:
    tokens_generated: int = 0
    tokens_prefilled: int = 0
    verifier_tokens: int = 0
    rounds: int = 0


class Strategy:
    """Base class: one question's search. Subclasses implement :meth:`rows` and
    :meth:`observe` (and the verifier hooks if they use one)."""

    name = "base"
    needs_spans = False  # whether the runner must compute per-token character offsets
    needs_verifier = False  # whether the runner must give it the verifier's verdicts

    @classmethod
    def rows_per_question(cls, cfg: SoftReasonConfig) -> int:
        """The most rows one question decodes in one round (sizes the window)."""
        return 1

    @classmethod
    def first_token_logprobs(cls, cfg: SoftReasonConfig) -> int:
        """How many of the first token's log-probs it reads from its prompt state: the top
        few (an engine over HTTP then asks for no more), or -1 for the whole vocabulary."""
        return -1

    def __init__(self, ctx: QuestionContext) -> None:
        self.ctx = ctx
        self.done = False
        self.stop_reason = ""
        self.fallback: Fallback | None = None
        self.is_fallback = False  # this greedy run replaces a failed strategy
        self.generations: list[Generation] = []
        self.counters = Counters(tokens_prefilled=ctx.state.prefilled_tokens)
        self.started = time.perf_counter()
        self.wall_time = 0.0
        self.extra_votes: list[str | None] = []

    def rows(self) -> list[DecodeRow]:
        raise NotImplementedError

    def observe(self, gens: list[Generation]) -> None:
        raise NotImplementedError

    def verify_request(self) -> VerifyRequest | None:
        """A request for the verifier after :meth:`observe`, or None if none is needed."""
        return None

    def observe_verification(self, result: VerifyResult) -> None:
        raise NotImplementedError

    def proposal_request(self) -> ProposalRequest | None:
        """A BO step to run before the next round (the runner batches them), or None."""
        return None

    def observe_proposal(self, proposal: Proposal) -> None:
        raise NotImplementedError

    def ranked(self) -> list[Generation]:
        """Candidates, the returned one first."""
        return list(self.generations)

    def finish(self, reason: str) -> None:
        self.done = True
        self.stop_reason = self.stop_reason or reason
        self.wall_time = time.perf_counter() - self.started

    def fail(self, reason: Fallback) -> None:
        """Give up on the search; the model answers this question with plain greedy."""
        self.fallback = reason
        self.finish("fallback")

    def row(self, first_token: int | None = None, first_embed: torch.Tensor | None = None,
            temperature: float = 0.0, seed: int = 0) -> DecodeRow:
        return DecodeRow(self.ctx.state, first_token=first_token, first_embed=first_embed,
                         temperature=temperature, seed=seed)

    def record(self, gens: list[Generation]) -> None:
        self.generations.extend(gens)
        self.counters.tokens_generated += sum(g.tokens for g in gens)

    def trace(self) -> dict:
        """What the JSONL trace stores for this question."""
        chosen = self.ranked()[0] if self.generations and not self.fallback else None
        return {
            "strategy": self.name,
            "task": self.ctx.task_name,
            "seed": self.ctx.seed,
            "rounds": self.counters.rounds,
            "stop_reason": self.stop_reason,
            "fallback": None if self.fallback is None else str(self.fallback),
            "tokens_generated": self.counters.tokens_generated,
            "tokens_prefilled": self.counters.tokens_prefilled,
            "verifier_tokens": self.counters.verifier_tokens,
            "wall_time_s": round(self.wall_time, 3),
            "chosen": None if chosen is None else self.generations.index(chosen),
            "candidates": [
                {"round": g.round, "text": g.text, "answer": g.answer, "tokens": g.tokens,
                 "r_verifier": g.r_verifier, "r_coherence": g.r_coherence, "reward": g.reward,
                 "confidence": g.confidence}
                for g in self.generations
            ],
        }


class OneRound(Strategy):
    """Strategies that decode one batch of rows and then choose."""

    def observe(self, gens: list[Generation]) -> None:
        self.record(gens)
        self.counters.rounds = 1
        self.finish("done")


class Greedy(OneRound):
    """Plain greedy decoding (``mode=greedy``), also the fallback of every other strategy."""

    name = "greedy"

    @classmethod
    def first_token_logprobs(cls, cfg: SoftReasonConfig) -> int:
        return 2  # the greedy token and the top-1/top-2 margin

    def rows(self) -> list[DecodeRow]:
        return [self.row(first_token=self.ctx.state.greedy_token)]
