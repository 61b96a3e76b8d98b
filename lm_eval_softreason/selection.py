"""Choosing the returned answer among candidates: best objective or majority vote."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from lm_eval_softreason.answers import normalize_answer


@dataclass
class Generation:
    """One finished candidate of a question, with everything the trace records."""

    text: str
    tokens: int
    logprobs: list[float] = field(repr=False, default_factory=list)
    margins: list[float] = field(repr=False, default_factory=list)
    answer: str | None = None
    round: int = 0
    r_verifier: float | None = None
    r_coherence: float | None = None
    reward: float | None = None
    confidence: float | None = None  # cot_decoding's answer confidence
    spans: list[tuple[int, int]] = field(repr=False, default_factory=list)  # token char offsets


def majority(answers: Sequence[str | None]) -> str | None:
    """Most common normalised answer; ``None`` (unparsed) never votes. Ties go to the answer
    seen first, so the result does not depend on hash order."""
    votes = [a for a in (normalize_answer(x) for x in answers) if a is not None]
    if not votes:
        return None
    counts = Counter(votes)
    top = max(counts.values())
    return next(a for a in votes if counts[a] == top)


def by_objective(gens: Sequence[Generation]) -> list[Generation]:
    """Highest objective first; ties go to higher coherence, then to the earlier candidate."""
    order = sorted(
        range(len(gens)),
        key=lambda i: (-(gens[i].reward or 0.0), -(gens[i].r_coherence or 0.0), i),
    )
    return [gens[i] for i in order]


def rank(gens: Sequence[Generation], select: str, extra_votes: Sequence[str | None] = ()) -> list[Generation]:
    """All candidates, chosen one first.

    ``best``: by objective. ``vote``: the majority answer over candidates (plus ``extra_votes``,
    e.g. verifier answers, as the reference code does) wins; among its holders the best by
    objective is returned. If only extra votes hold the winner, fall back to ``best``.
    """
    ordered = by_objective(gens)
    if select == "best" or not gens:
        return ordered
    winner = majority([g.answer for g in gens] + list(extra_votes))
    holders = [g for g in ordered if winner is not None and normalize_answer(g.answer) == winner]
    if not holders:
        return ordered
    return holders[:1] + [g for g in ordered if g is not holders[0]]
