"""Self-consistency as a budget curve: maj@k for k = 1..N from one run's N samples per question.

A run with ``mode=sample, n_samples=N`` and ``trace_path=`` holds every sample's answer and
tokens; voting over subsets of size k estimates what ``n_samples=k`` would have scored, at no
cost, so one run draws the whole curve that the other strategies are compared with.

Definitions:

* a question's maj@k is the mean, over its size-k subsets of samples, of whether the subset's
  majority answer matches gold (``answers.answers_match``). The vote is ``selection.majority``
  over the subset's answers in sampling order: unparsed answers never vote, a tie goes to the
  answer sampled first, no parsed answer counts as wrong; so the full set (k = N) votes exactly
  as the run did. Every subset is used when there are at most ``max_subsets`` of them, else
  ``max_subsets`` subsets drawn uniformly with a seeded generator;
* a question with fewer than k samples (a greedy fallback has one) votes over all it has;
* maj@k is the mean over questions, its stderr the sample standard deviation over questions
  over sqrt(questions) (lm-eval's stderr of a mean);
* tokens at k: the mean over questions of k x that question's mean tokens per sample, the
  expected generated tokens of a size-k subset.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from lm_eval_softreason.answers import answers_match
from lm_eval_softreason.diagnose import gold_answer
from lm_eval_softreason.selection import majority
from lm_eval_softreason.settings import prompt_sha


@dataclass(frozen=True)
class CurvePoint:
    k: int
    accuracy: float
    stderr: float
    tokens: float  # mean generated tokens per question of k samples


def subsets(n: int, k: int, max_subsets: int, rng: random.Random) -> list[tuple[int, ...]]:
    """Index subsets (sorted, so sampling order is kept) of size k out of n."""
    if math.comb(n, k) <= max_subsets:
        return list(combinations(range(n), k))
    return [tuple(sorted(rng.sample(range(n), k))) for _ in range(max_subsets)]


def question_accuracy(answers: Sequence[str | None], gold: str, k: int,
                      max_subsets: int, rng: random.Random) -> float:
    """Mean over size-k subsets of whether their majority answer is gold."""
    picks = subsets(len(answers), min(k, len(answers)), max_subsets, rng)
    return sum(answers_match(majority([answers[i] for i in p]), gold) for p in picks) / len(picks)


def maj_at_k(questions: Sequence[tuple[Sequence[str | None], Sequence[int], str]],
             max_subsets: int = 200, seed: int = 0) -> list[CurvePoint]:
    """maj@k for k = 1..N (N: the most samples any question has) from (answers, tokens per
    sample, gold) per question; see the module docstring."""
    if not questions:
        raise ValueError("maj@k needs at least one question")
    if any(not answers or len(answers) != len(tokens) for answers, tokens, _ in questions):
        raise ValueError("every question needs at least one sample, with one token count each")
    rng = random.Random(seed)
    n_max = max(len(answers) for answers, _, _ in questions)
    points = []
    for k in range(1, n_max + 1):
        accs = [question_accuracy(a, gold, k, max_subsets, rng) for a, _, gold in questions]
        mean = sum(accs) / len(accs)
        var = sum((x - mean) ** 2 for x in accs) / (len(accs) - 1) if len(accs) > 1 else 0.0
        tokens = sum(min(k, len(t)) * sum(t) / len(t) for _, t, _ in questions) / len(questions)
        points.append(CurvePoint(k, mean, math.sqrt(var / len(accs)), tokens))
    return points


def curve_from_run(trace: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]],
                   max_subsets: int = 200, seed: int = 0) -> list[CurvePoint]:
    """maj@k of a self-consistency run: its trace records joined by ``prompt_sha`` to its
    logged samples (one per question and filter), whose ``target`` is the gold answer."""
    from lm_eval_softreason.rescore import request_args

    gold = {prompt_sha(request_args(s)[0]): gold_answer(s["target"]) for s in samples}
    missing = [r["prompt_sha"] for r in trace if r["prompt_sha"] not in gold]
    if missing:
        raise ValueError(f"{len(missing)} trace records match no sample (first: {missing[0]})")
    return maj_at_k([([c["answer"] for c in r["candidates"]],
                      [c["tokens"] for c in r["candidates"]], gold[r["prompt_sha"]])
                     for r in trace], max_subsets, seed)
