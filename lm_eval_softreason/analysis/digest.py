"""A finished cell's per-question digest, ``cells/<task>__<strategy>.digest.jsonl``: what a
committed results folder keeps of the cell's samples and trace, which hold the benchmark's
documents and are never committed. Per question, nothing of the document: ``scores`` (lm-eval's
metrics under each filter, for ``diagnose --versus``) and, for traced cells, ``candidates``
(each one's answer, tokens and flexible-extract ``exact_match``, from which ``curves`` draws
maj@k as from samples and trace). Traced questions come first, in trace order (the curve's
subsets are drawn in that order), then the others in sample order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lm_eval_softreason.analysis.artifacts import sample_sha
from lm_eval_softreason.jsonl import read_jsonl
from lm_eval_softreason.settings import cell_stem

SUFFIX = ".digest.jsonl"
CANDIDATE_FILTER, CANDIDATE_METRIC = "flexible-extract", "exact_match"


def path_of(out: Path, task: str, strategy: str) -> Path:
    return out / "cells" / f"{cell_stem(task, strategy)}{SUFFIX}"


def build(out: Path, task: str, strategy: str) -> list[dict[str, Any]]:
    """The digest of a cell whose samples file (and trace, where it has one) is in ``out``."""
    from lm_eval_softreason.analysis.rescore import candidate_scores
    from lm_eval_softreason.analysis.rescore import index_trace
    from lm_eval_softreason.trace import read_trace

    stem = out / "cells" / cell_stem(task, strategy)
    samples = read_jsonl(stem.with_name(stem.name + ".samples.jsonl"))
    by_sha: dict[str, dict[str, Any]] = {}
    for row in samples:
        sha = sample_sha(row)
        record = by_sha.setdefault(sha, {"doc_id": row["doc_id"], "prompt_sha": sha,
                                         "scores": {}})
        record["scores"][row["filter"]] = {m: row[m] for m in row.get("metrics", [])
                                           if isinstance(row.get(m), (int, float))}
    trace_path = stem.with_name(stem.name + ".trace.jsonl")
    if not trace_path.exists():
        return list(by_sha.values())
    trace = index_trace(read_trace(trace_path))
    missing = [sha for sha in trace if sha not in by_sha]
    if missing:
        raise ValueError(f"{trace_path}: {len(missing)} trace records match no sample "
                         f"(first: {missing[0]})")
    right = candidate_scores(task, samples, trace, CANDIDATE_FILTER, CANDIDATE_METRIC)
    traced = [{**by_sha[sha],
               "candidates": [{"answer": c["answer"], "tokens": c["tokens"], "right": ok}
                              for c, ok in zip(record["candidates"], right[sha])]}
              for sha, record in trace.items()]
    # a question that could not run has a sample (scored) but no trace record
    return traced + [r for sha, r in by_sha.items() if sha not in trace]


def load(out: Path, task: str, strategy: str) -> list[dict[str, Any]]:
    """The cell's digest file, or the digest built from its samples and trace."""
    path = path_of(out, task, strategy)
    return read_jsonl(path) if path.exists() else build(out, task, strategy)


def dumps(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def scores(records: list[dict[str, Any]], filter_name: str = "flexible-extract",
           metric: str = "exact_match") -> dict[str, float]:
    """Each question's ``metric`` under ``filter_name``, by ``prompt_sha``."""
    return {r["prompt_sha"]: float(r["scores"][filter_name][metric]) for r in records
            if metric in r["scores"].get(filter_name, {})}


def curve_questions(records: list[dict[str, Any]]
                    ) -> list[tuple[list[str | None], list[int], list[float]]]:
    """(answers, tokens, right) per traced question, as ``curves.maj_at_k`` takes them."""
    return [([c["answer"] for c in r["candidates"]], [c["tokens"] for c in r["candidates"]],
             [c["right"] for c in r["candidates"]]) for r in records if "candidates" in r]
