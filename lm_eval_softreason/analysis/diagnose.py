"""``lm-eval-softreason diagnose``: why softreason won or lost, from a ``compare`` folder's traces.

    lm-eval-softreason diagnose --out results/qwen0.5b --task svamp [--strategy softreason]

It joins a cell's trace with lm-eval's per-sample file (the gold answers) and prints the oracle,
other selection rules, candidate diversity, the verifier's reliability, truncation, stop
reasons and sign tests against other cells (examples/README.md says what each part means).
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path
from typing import Any

from lm_eval_softreason.analysis import digest
from lm_eval_softreason.scoring.answers import answers_match
from lm_eval_softreason.analysis.artifacts import gold_answer, sample_sha
from lm_eval_softreason.jsonl import read_jsonl
from lm_eval_softreason.analysis.rescore import RescoreError, check_trace
from lm_eval_softreason.scoring.selection import majority
from lm_eval_softreason.settings import cell_stem
from lm_eval_softreason.trace import read_trace


def flexible_samples(path: Path) -> dict[str, dict[str, Any]]:
    """lm-eval's flexible-extract rows, keyed like the trace (:func:`sample_sha`)."""
    rows = [r for r in read_jsonl(path) if r.get("filter") == "flexible-extract"]
    return {sample_sha(r): r for r in rows}



def join(out: Path, task: str, strategy: str) -> list[dict[str, Any]]:
    """One record per question: its trace line plus gold and lm-eval's score. A trace that is
    not the cell's own (``rescore.check_trace``) is refused."""
    stem = out / "cells" / cell_stem(task, strategy)
    samples_path = stem.with_name(stem.name + ".samples.jsonl")
    trace_path = stem.with_name(stem.name + ".trace.jsonl")
    records = read_trace(trace_path)
    check_trace(records, {samples_path: read_jsonl(samples_path)}, trace_path)
    samples = flexible_samples(samples_path)
    return [{**t, "gold": gold_answer(samples[t["prompt_sha"]]["target"]),
             "score": float(samples[t["prompt_sha"]]["exact_match"])} for t in records]


def other_scores(folder: Path, task: str, strategy: str) -> dict[str, float] | None:
    """A cell's flexible-extract score per ``prompt_sha``, from its samples or, in a committed
    folder, its digest; None if it has neither."""
    samples = folder / "cells" / f"{cell_stem(task, strategy)}.samples.jsonl"
    if samples.exists():
        return {h: float(s["exact_match"]) for h, s in flexible_samples(samples).items()}
    path = digest.path_of(folder, task, strategy)
    return digest.scores(read_jsonl(path)) if path.exists() else None


def pct(num: float, den: float) -> str:
    return f"{num}/{den} = {100 * num / den:.1f}%" if den else "n/a"


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test (ties dropped): the probability, if either cell were as
    likely to win a question as to lose it, of a split at least this uneven."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n)


def versus(records: list[dict[str, Any]], name: str, other: dict[str, float]) -> str:
    """Head to head with another cell on the questions both answered (same prompts)."""
    both = [(r["score"], other[r["prompt_sha"]]) for r in records if r["prompt_sha"] in other]
    wins = sum(s > o for s, o in both)
    losses = sum(s < o for s, o in both)
    mine, theirs = sum(s for s, _ in both), sum(o for _, o in both)
    return (f"vs {name} on the same {len(both)} questions: {mine:g} vs {theirs:g} right; "
            f"{wins} won, {losses} lost, {len(both) - wins - losses} tied; "
            f"sign test p = {sign_test(wins, losses):.2g}")


def diagnose(records: list[dict[str, Any]], max_gen_toks: int = 256) -> list[str]:
    n = len(records)
    lines = [f"questions: {n}"]
    right = sum(r["score"] for r in records)
    lines.append(f"returned answer right (lm-eval flexible-extract): {pct(right, n)}")

    # whether each candidate is gold, per record, in candidate order (every figure below uses it)
    right = [[answers_match(c["answer"], r["gold"]) for c in r["candidates"]] for r in records]
    pairs = [(c, ok) for r, oks in zip(records, right) for c, ok in zip(r["candidates"], oks)]

    oracle = sum(any(oks) for oks in right)
    lines.append(f"oracle (some candidate right): {pct(oracle, n)}")
    vote = sum(answers_match(majority([c["answer"] for c in r["candidates"]]), r["gold"])
               for r in records)
    lines.append(f"majority vote over candidates would score: {pct(vote, n)}")
    vote_v = sum(answers_match(majority([c["answer"] for c in r["candidates"]]
                                        + r.get("verifier_answers", [])), r["gold"])
                 for r in records)
    lines.append(f"vote over candidates + verifier answers: {pct(vote_v, n)}")
    first = sum(oks[0] for oks in right if oks)
    lines.append(f"first candidate of round 0 would score: {pct(first, n)}")

    texts = [len({c["text"] for c in r["candidates"]}) for r in records]
    answers = [len({c["answer"] for c in r["candidates"]}) for r in records]
    cands = [len(r["candidates"]) for r in records]
    lines.append(f"candidates/question: mean {sum(cands) / n:.1f}; distinct texts mean "
                 f"{sum(texts) / n:.1f}; distinct answers mean {sum(answers) / n:.2f}; "
                 f"questions with a single answer across all candidates: "
                 f"{sum(a == 1 for a in answers)}")

    # verifier=none records None answers and r_verifier 0: no verifier figures for such cells
    v_answers = [(a, r["gold"]) for r in records for a in r.get("verifier_answers", [])
                 if a is not None]
    if v_answers:
        v_right = sum(answers_match(a, g) for a, g in v_answers)
        lines.append(f"verifier's own answer right: {pct(v_right, len(v_answers))} of "
                     f"verifier calls")
    else:
        lines.append("verifier: none ran in this cell")
    scored = [(c["r_verifier"], ok) for c, ok in pairs if c.get("r_verifier") is not None]
    if scored:
        base = sum(ok for _, ok in scored)
        lines.append(f"candidates right (base rate): {pct(base, len(scored))}")
        if v_answers:
            agreed = [ok for v, ok in scored if v >= 0.5]
            rejected = [ok for v, ok in scored if v < 0.5]
            lines.append(f"P(right | verifier agreed): {pct(sum(agreed), len(agreed))}; "
                         f"P(right | verifier disagreed): {pct(sum(rejected), len(rejected))}")
        mixed = [r for r, oks in zip(records, right) if len(set(oks)) == 2]
        picked = sum(r["score"] for r in mixed)
        lines.append(f"questions with both right and wrong candidates: {len(mixed)}; "
                     f"the returned answer was right in {pct(picked, len(mixed))}")

    judged = [(c.get("tokens", 0) >= max_gen_toks, ok) for c, ok in pairs]
    if judged:
        capped = [ok for cut, ok in judged if cut]
        rest = [ok for cut, ok in judged if not cut]
        lines.append(f"candidates at the {max_gen_toks}-token generation cap: "
                     f"{pct(len(capped), len(judged))}; right among them: "
                     f"{pct(sum(capped), len(capped))}; among the others: "
                     f"{pct(sum(rest), len(rest))}")

    rounds = Counter(r["rounds"] for r in records)
    stops = Counter(r["stop_reason"] for r in records)
    lines.append(f"rounds: {dict(sorted(rounds.items()))}; stop reasons: {dict(stops)}; "
                 f"fallbacks: {sum(r['fallback'] is not None for r in records)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lm-eval-softreason diagnose",
                                description="Why did softreason win or lose? Diagnostics "
                                            "from a compare results folder's traces.")
    p.add_argument("--out", required=True, help="lm-eval-softreason compare results folder")
    p.add_argument("--task", required=True)
    p.add_argument("--strategy", default="softreason")
    p.add_argument("--max-gen-toks", type=int, default=256,
                   help="the task's generation limit, for the truncation line (lm-eval's "
                        "default 256 unless the task's generation_kwargs set max_gen_toks)")
    p.add_argument("--versus", action="append", default=[], metavar="FOLDER:STRATEGY",
                   help="also compare question by question with that cell of another results "
                        "folder (repeatable); the folder's own greedy cell is always compared")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        records = join(out, args.task, args.strategy)
    except RescoreError as exc:
        p.error(str(exc))
    others = [(out, "greedy")] if args.strategy != "greedy" else []
    for spec in args.versus:
        folder, _, strategy = spec.rpartition(":")
        if not folder or not strategy:
            raise SystemExit(f"--versus {spec!r}: expected FOLDER:STRATEGY")
        others.append((Path(folder), strategy))
    print(f"## {args.task} / {args.strategy} ({out})\n")
    lines = diagnose(records, args.max_gen_toks)
    for folder, strategy in others:
        scores = other_scores(folder, args.task, strategy)
        if scores is not None:
            lines.append(versus(records, f"{strategy} ({folder})", scores))
        elif (folder, strategy) != (out, "greedy"):
            raise SystemExit(f"no {cell_stem(args.task, strategy)} samples or digest in "
                             f"{folder / 'cells'}")
    for line in lines:
        print(f"- {line}")
    return 0

