"""Self-consistency as a budget curve: maj@k for k = 1..N from one run's N samples per question.

Voting over size-k subsets of a traced ``mode=sample`` run estimates what ``n_samples=k`` would
have scored, at no cost, so one run draws the whole curve the other strategies are compared
with (the definitions: docs/architecture.md, "maj@k curves").
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from lm_eval_softreason.scoring.answers import answers_match, normalize_answer
from lm_eval_softreason.analysis.artifacts import gold_answer, request_args
from lm_eval_softreason.scoring.selection import majority_holder
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


def vote_pick(answers: Sequence[str | None], subset: Sequence[int]) -> int:
    """The sample a run of these samples returns (``SelfConsistency``): the first holder of the
    majority answer, or the first sample when no answer parsed."""
    return subset[majority_holder([answers[i] for i in subset])]


def question_accuracy(answers: Sequence[str | None], right: Sequence[float], k: int,
                      max_subsets: int, rng: random.Random) -> float:
    """Mean over size-k subsets of the score of the sample their vote returns."""
    picks = subsets(len(answers), min(k, len(answers)), max_subsets, rng)
    return sum(right[vote_pick(answers, p)] for p in picks) / len(picks)


def maj_at_k(questions: Sequence[tuple[Sequence[str | None], Sequence[int], Sequence[float]]],
             max_subsets: int = 200, seed: int = 0) -> list[CurvePoint]:
    """maj@k for k = 1..N (N: the most samples any question has) from (answers, tokens,
    right) per sample of each question; see the module docstring."""
    if not questions:
        raise ValueError("maj@k needs at least one question")
    if any(not a or not len(a) == len(t) == len(r) for a, t, r in questions):
        raise ValueError("every question needs at least one sample, each with its token "
                         "count and score")
    rng = random.Random(seed)
    n_max = max(len(answers) for answers, _, _ in questions)
    points = []
    for k in range(1, n_max + 1):
        accs = [question_accuracy(a, r, k, max_subsets, rng) for a, _, r in questions]
        mean = sum(accs) / len(accs)
        var = sum((x - mean) ** 2 for x in accs) / (len(accs) - 1) if len(accs) > 1 else 0.0
        tokens = sum(min(k, len(t)) * sum(t) / len(t) for _, t, _ in questions) / len(questions)
        points.append(CurvePoint(k, mean, math.sqrt(var / len(accs)), tokens))
    return points



def curve_from_run(trace: dict[str, dict[str, Any]], samples: Sequence[dict[str, Any]],
                   right: dict[str, list[float]] | None = None, max_subsets: int = 200,
                   seed: int = 0) -> list[CurvePoint]:
    """maj@k of a self-consistency run: its trace records (by ``prompt_sha``, as
    ``rescore.index_trace`` gives them) joined to its
    logged samples (one per question and filter). ``right``: each candidate's score by
    ``prompt_sha`` (:func:`candidate_scores`); by default its answer against the gold answer,
    the samples' ``target``."""
    gold = {prompt_sha(request_args(s)[0]): gold_answer(s["target"]) for s in samples}
    missing = [sha for sha in trace if sha not in gold]
    if missing:
        raise ValueError(f"{len(missing)} trace records match no sample (first: {missing[0]})")
    return maj_at_k([
        ([c["answer"] for c in r["candidates"]], [c["tokens"] for c in r["candidates"]],
         right[r["prompt_sha"]] if right is not None else
         [float(answers_match(c["answer"], gold[r["prompt_sha"]])) for c in r["candidates"]])
        for r in trace.values()], max_subsets, seed)


def cell_curve(out: Path, task: str, strategy: str) -> list[CurvePoint]:
    """maj@k of a ``compare`` results folder's self-consistency cell, each sample scored with
    the task's own flexible-extract exact_match (the column compare's table and plot show),
    from its digest (``digest``), which a committed folder keeps without samples or trace."""
    from lm_eval_softreason.analysis import digest

    return maj_at_k(digest.curve_questions(digest.load(out, task, strategy)))


def hf_sc_curve(task_name: str, samples: Sequence[dict[str, Any]], tokens_per_response: float,
                filter_name: str = "score-first", metric: str = "exact_match", task: Any = None,
                max_subsets: int = 200, seed: int = 0) -> list[CurvePoint]:
    """maj@k of lm-eval's own self-consistency task run with ``repeats`` N (compare's hf_sc
    cell), from its logged samples: each of a question's N responses is read with the task's
    one-answer filter (``score-first``: its regex, first match) and scored with the task's
    ``metric``; the votes count those extracted answers, ``[invalid]`` included, as the task's
    own ``majority_vote`` filter does, so k = N scores what its ``maj@N`` scored (up to
    number normalisation). Responses' token counts are not logged: tokens at k are k x
    ``tokens_per_response``, the cell's mean."""
    from lm_eval.api.instance import Instance

    from lm_eval_softreason.analysis.rescore import load_task
    from lm_eval_softreason.scoring.extraction import filter_ensembles

    task = task if task is not None else load_task(task_name)
    ensemble = next((e for e in filter_ensembles(task.config.filter_list)
                     if e.name == filter_name), None)
    if ensemble is None:
        raise ValueError(f"{task_name} has no filter {filter_name!r}")
    questions = []
    for row in samples:
        if row["filter"] != filter_name:
            continue
        context, gen_kwargs = request_args(row)
        answers, right = [], []
        for text in row["resps"][0]:
            inst = Instance("generate_until", row["doc"], (context, gen_kwargs), idx=0,
                            metadata=(task_name, row["doc_id"], 1))
            inst.resps = [text]
            ensemble.apply([inst])
            answer = inst.filtered_resps[filter_name]
            answers.append(answer)
            right.append(float(task.process_results(row["doc"], [answer])[metric]))
        questions.append((answers, [tokens_per_response] * len(answers), right))
    return maj_at_k(questions, max_subsets, seed)


def draw_curve(ax: Any, points: Sequence[CurvePoint], color: Any, label: str) -> None:
    """The curve on a matplotlib axis in percent against tokens per question: a line with a
    marker per k, a ±1 stderr band, and k written at each point."""
    xs = [p.tokens for p in points]
    ys = [100 * p.accuracy for p in points]
    se = [100 * p.stderr for p in points]
    ax.plot(xs, ys, marker="o", markersize=3, color=color, label=label, zorder=3)
    ax.fill_between(xs, [y - s for y, s in zip(ys, se)], [y + s for y, s in zip(ys, se)],
                    color=color, alpha=0.2, linewidth=0, zorder=2)
    for p, x, y in zip(points, xs, ys):
        ax.annotate(str(p.k), (x, y), textcoords="offset points", xytext=(0, 4), fontsize=6,
                    ha="center", color=color)
