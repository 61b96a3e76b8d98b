"""Choosing the returned answer among candidates: best objective or a (weighted) vote.

The live run (model_arg ``select``) and ``lm-eval-softreason rescore`` share these rules, so a
rule found with ``rescore`` on a finished trace returns the same answer when a run uses it.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

from lm_eval_softreason.scoring.answers import normalize_answer
from lm_eval_softreason.scoring.candidate import Generation


def majority(answers: Sequence[str | None]) -> str | None:
    """Most common normalised answer; ``None`` (unparsed) never votes. Ties go to the answer
    seen first, so the result does not depend on hash order."""
    return _tally([(a, 1.0) for a in answers])


def majority_holder(answers: Sequence[str | None]) -> int:
    """Index of the first answer holding the :func:`majority`, 0 when no answer parsed: the
    sample a self-consistency vote returns."""
    winner = majority(answers)
    return next((i for i, a in enumerate(answers)
                 if winner is not None and normalize_answer(a) == winner), 0)


def _tally(votes: Sequence[tuple[str | None, float]]) -> str | None:
    """The normalised answer with the largest total weight; ties go to the answer with more
    votes, then to the one seen first. Unparsed answers (``None``) never vote."""
    totals: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for raw, weight in votes:
        answer = normalize_answer(raw)
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + weight
            counts[answer] += 1
    if not totals:
        return None
    # totals keeps insertion order and min returns the first of equal keys: the first seen
    return min(totals, key=lambda a: (-totals[a], -counts[a]))


def by_objective(gens: Sequence[Generation]) -> list[Generation]:
    """Highest objective first; ties go to higher coherence, then to the earlier candidate."""
    order = sorted(
        range(len(gens)),
        key=lambda i: (-(gens[i].reward or 0.0), -(gens[i].r_coherence or 0.0), i),
    )
    return [gens[i] for i in order]


# Each vote's weight per candidate. Only ``vote`` also counts the verifier's own answers (one
# vote each), as the reference implementation does. Missing or negative weights count 0, so
# the coherence weight is meant for the [0, 1] terms (``geo_mean_prob``, ``mean_prob``).
VOTE_WEIGHTS: dict[str, Callable[[Generation], float]] = {
    "vote": lambda g: 1.0,
    "vote_candidates": lambda g: 1.0,
    "vote_verifier_weighted": lambda g: max(g.r_verifier or 0.0, 0.0),
    "vote_coherence_weighted": lambda g: max(g.r_coherence or 0.0, 0.0),
}
SELECTS = ("best", *VOTE_WEIGHTS)


def rank(gens: Sequence[Generation], select: str,
         verifier_answers: Sequence[str | None] = ()) -> list[Generation]:
    """All candidates, chosen one first.

    ``best``: by objective. The votes (:data:`VOTE_WEIGHTS`): the answer with the largest total
    weight wins (ties: more votes, then first seen in candidate order) and among its holders the
    best by objective is returned. With no parsed answer, or a winner that only the verifier's
    answers hold, fall back to ``best``.
    """
    ordered = by_objective(gens)
    if select == "best" or not gens:
        return ordered
    weight = VOTE_WEIGHTS[select]
    votes = [(g.answer, weight(g)) for g in gens]
    if select == "vote":
        votes += [(a, 1.0) for a in verifier_answers]
    winner = _tally(votes)
    holders = [g for g in ordered if winner is not None and normalize_answer(g.answer) == winner]
    if not holders:
        return ordered
    return holders[:1] + [g for g in ordered if g is not holders[0]]
