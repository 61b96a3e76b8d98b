"""``lm-eval-softreason view RUN``: one self-contained HTML page to read a run question by
question.

    lm-eval-softreason view RUN [--trace T.jsonl] [--output PAGE.html]

RUN is an lm-eval ``--output_path`` folder (written with ``--log_samples``), a trace JSONL alone,
or a ``compare`` results folder. One file, so that a run copied to any machine reads without a
server, network or install; its script (``view_page.html``) builds only what is on screen.
Right and wrong are lm-eval's own scores under the headline filter; a trace is refused unless it
belongs to the results beside it (:func:`rescore.check_trace`).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

from lm_eval_softreason.analysis import digest
from lm_eval_softreason.analysis.compare import report as compare_report
from lm_eval_softreason.analysis import folders
from lm_eval_softreason.scoring.answers import answers_match, normalize_answer
from lm_eval_softreason.analysis.artifacts import gold_answer, request_args, sample_sha
from lm_eval_softreason.analysis.rescore import RescoreError, check_trace
from lm_eval_softreason.errors import UserError
from lm_eval_softreason.trace import read_trace
from lm_eval_softreason.jsonl import read_jsonl

TEMPLATE = Path(__file__).with_name("view_page.html")
HEADLINE_FILTER, HEADLINE_METRIC = digest.CANDIDATE_FILTER, digest.CANDIDATE_METRIC
TRACE_ARG = "trace_path"


class ViewError(UserError):
    """A run the viewer cannot read; ``main`` prints it as one line and exits 2."""


# ------------------------------------------------------------------------------ one strategy


def traced(record: dict[str, Any], gold: str | None) -> dict[str, Any]:
    """What the page shows of one trace record: its candidates as compact rows
    ``[round, answer, r_verifier, r_coherence, objective, tokens, text, right]`` (right: the
    answer matches gold, None without one), the best objective of each round and the search's
    own account (stop reason, fallback, verifier texts)."""
    cands = record.get("candidates") or []
    best: dict[int, float] = {}
    for c in cands:
        if c.get("reward") is not None:
            best[c["round"]] = max(best.get(c["round"], c["reward"]), c["reward"])
    chosen = record.get("chosen")
    return {
        "answer": cands[chosen].get("answer") if chosen is not None else None,
        "chosen": chosen, "fallback": record.get("fallback"),
        "stop": record.get("stop_reason"), "rounds": record.get("rounds"),
        "tokens": record.get("tokens_generated"), "best": [best[r] for r in sorted(best)],
        "analyses": record.get("verifier_analyses") or [],
        "verifier": record.get("verifier_answers") or [],
        "cands": [[c.get("round"), c.get("answer"), c.get("r_verifier"), c.get("r_coherence"),
                   c.get("reward"), c.get("tokens"), c.get("text"),
                   None if gold is None else answers_match(c.get("answer"), gold)]
                  for c in cands],
    }


def score(row: dict[str, Any]) -> float | None:
    """A sample's headline metric (``exact_match``, else the first number it logs)."""
    names = [HEADLINE_METRIC, *row.get("metrics", [])]
    return next((float(row[m]) for m in names if isinstance(row.get(m), (int, float))), None)


def headline(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One samples row per question (by prompt sha), under the headline filter."""
    filters = list(dict.fromkeys(r["filter"] for r in rows))
    chosen = HEADLINE_FILTER if HEADLINE_FILTER in filters else filters[0]
    return {sample_sha(r): r for r in rows if r["filter"] == chosen}


def from_samples(rows: list[dict[str, Any]], records: list[dict[str, Any]]
                 ) -> dict[str, dict[str, Any]]:
    """Questions of one strategy from lm-eval's samples, each with its trace record if any:
    by sha, the question (task-independent part) and the strategy's entry."""
    by_sha = {r["prompt_sha"]: r for r in records}
    out = {}
    for sha, row in headline(rows).items():
        gold = gold_answer(row["target"])
        right = score(row)
        entry = traced(by_sha[sha], gold) if sha in by_sha else {
            "response": row["resps"][0][0] if row["resps"] and row["resps"][0] else None}
        entry.update(answer=row["filtered_resps"][0] if row["filtered_resps"] else None,
                     right=None if right is None else right > 0)
        out[sha] = {"sha": sha, "doc": row["doc_id"], "prompt": request_args(row)[0],
                    "gold": gold, "entry": entry}
    return out


def from_digest(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Questions of one strategy from a committed digest: scores and candidates' answers,
    tokens and scores; no prompt, gold, texts or returned answer."""
    out = {}
    for r in records:
        right = r["scores"].get(HEADLINE_FILTER, {}).get(HEADLINE_METRIC)
        entry = {"answer": None, "right": None if right is None else right > 0, "cands": [
            [None, c["answer"], None, None, None, c["tokens"], None, c["right"] > 0]
            for c in r.get("candidates", [])]}
        out[r["prompt_sha"]] = {"sha": r["prompt_sha"], "doc": r["doc_id"], "prompt": None,
                                "gold": None, "entry": entry}
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """A trace's complete records (``trace.read_trace``: a cut last line is dropped)."""
    try:
        records = read_trace(path)
    except OSError as exc:
        raise ViewError(f"{path}: cannot read the trace ({exc.strerror})") from None
    except ValueError as exc:
        raise ViewError(f"{path}: not a softreason trace ({exc})") from None
    if not all(isinstance(r, dict) and "candidates" in r and "prompt_sha" in r for r in records):
        raise ViewError(f"{path}: not a softreason trace (records without candidates or "
                        f"prompt_sha)")
    return records


# --------------------------------------------------------------------------------- the runs


def column(task: str, strategy: str, questions: dict[str, dict[str, Any]],
           tokens_per_q: float | None) -> dict[str, Any]:
    """One (task, strategy): its questions and its summary line."""
    rights = [q["entry"]["right"] for q in questions.values() if q["entry"]["right"] is not None]
    return {"task": task, "strategy": strategy, "questions": questions, "summary": {
        "task": task, "strategy": strategy, "questions": len(questions),
        "accuracy": sum(rights) / len(rights) if rights else None,
        "tokens_per_q": tokens_per_q,
        "fallbacks": sum(bool(q["entry"].get("fallback")) for q in questions.values())}}


def mean_tokens(records: list[dict[str, Any]]) -> float | None:
    return sum(r["tokens_generated"] for r in records) / len(records) if records else None


def trace_alone(path: Path) -> list[dict[str, Any]]:
    """A trace file alone: its records as questions of their task and strategy, unscored."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in read_records(path):
        groups.setdefault((r.get("task", "?"), r.get("strategy", "?")), []).append(r)
    return [column(task, strategy, {r["prompt_sha"]: {
        "sha": r["prompt_sha"], "doc": None, "prompt": None, "gold": None,
        "entry": {**traced(r, None), "right": None}} for r in records}, mean_tokens(records))
        for (task, strategy), records in groups.items()]


def recorded_trace(results: dict[str, Any], folder: Path) -> Path | None:
    """The ``trace_path`` a results file's model_args record (a dict or ``k=v,...``), as
    given or relative to the run's folder; None if none is recorded."""
    args = results.get("config", {}).get("model_args") or {}
    if isinstance(args, str):
        args = dict(p.split("=", 1) for p in args.split(",") if "=" in p)
    if not args.get(TRACE_ARG):
        return None
    path = Path(args[TRACE_ARG])
    found = next((p for p in (path, folder / path) if p.is_file()), None)
    if found is None:
        raise ViewError(f"the trace {path} that the results record (model_arg {TRACE_ARG}) "
                        f"is not there; pass --trace PATH")
    return found


def results_folder(folder: Path, trace: Path | None) -> list[dict[str, Any]]:
    """An lm-eval ``--output_path`` folder: its newest results file, the samples written
    with it and the trace, checked to belong to them."""
    files = sorted(folder.rglob("results_*.json"), key=lambda p: p.name)
    if not files:
        raise ViewError(f"{folder}: no results here: neither results_*.json (an lm-eval "
                        f"--output_path folder) nor cells/*.json (a compare folder)")
    results_path = files[-1]
    if len(files) > 1:
        print(f"{len(files)} results files under {folder}; showing the newest, "
              f"{results_path.name}", file=sys.stderr)
    stamp = results_path.stem.removeprefix("results_")
    samples = {p: read_jsonl(p)
               for p in sorted(results_path.parent.glob(f"samples_*_{stamp}.jsonl"))}
    if not samples:
        raise ViewError(f"{results_path}: no samples_*_{stamp}.jsonl beside it; run lm-eval "
                        f"with --log_samples")
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ViewError(f"{results_path}: not a readable results file ({exc})") from None
    trace = trace or recorded_trace(results, folder)
    records = read_records(trace) if trace else []
    if trace:
        check_trace(records, samples, trace)
    config = results.get("config", {})
    strategy = (config.get("softreason") or {}).get("mode") or str(config.get("model"))
    out = []
    for path, rows in samples.items():
        task = path.stem.removeprefix("samples_").removesuffix(f"_{stamp}")
        mine = [r for r in records if r.get("task") == task]
        out.append(column(task, strategy, from_samples(rows, mine), mean_tokens(mine)))
    return out


def compare_folder(folder: Path) -> list[dict[str, Any]]:
    """A ``compare`` folder: each cell from its samples and trace (checked to be its own), or
    from its digest where only cell files and digests are kept."""
    out = []
    for cell in compare_report.sort_cells(folders.load_cells(folder)):
        task, strategy = cell["task"], cell["strategy"]
        paths = folders.cell_paths(folder, task, strategy)
        if paths["samples"].is_file():
            rows = read_jsonl(paths["samples"])
            records = read_records(paths["trace"]) if paths["trace"].is_file() else []
            check_trace(records, {paths["samples"]: rows}, paths["trace"])
            questions = from_samples(rows, records)
        elif digest.path_of(folder, task, strategy).is_file():
            questions = from_digest(digest.load(folder, task, strategy))
        else:
            questions = {}
        out.append(column(task, strategy, questions, cell.get("tokens_generated_per_q")))
    return out


# --------------------------------------------------------------------------------- the page


def disagree(entries: list[dict[str, Any]]) -> bool:
    """Strategies disagree when their answers differ, or (a digest keeps no answers) their
    right/wrong marks do."""
    if all(e["answer"] is not None for e in entries):
        return len({normalize_answer(e["answer"]) for e in entries}) > 1
    return len({e["right"] for e in entries}) > 1


def page_data(run: Path, trace: Path | None = None) -> dict[str, Any]:
    """Everything the page shows, as the JSON it embeds: ``summary`` rows, ``strategies`` per
    task in column order, and ``questions`` (task, sha, doc id, prompt, gold, each strategy's
    entry under ``by``, and the ``flags`` the filters read)."""
    if run.is_file():
        columns, kind = trace_alone(run), "trace"
    elif (run / "cells").is_dir():
        columns, kind = compare_folder(run), "compare"
        if not columns:
            raise ViewError(f"{run}: no finished cell in {run / 'cells'}")
    elif run.is_dir():
        columns, kind = results_folder(run, trace), "results"
    else:
        raise ViewError(f"{run}: no such file or folder")
    questions: dict[tuple[str, str], dict[str, Any]] = {}
    strategies: dict[str, list[str]] = {}
    for col in columns:
        strategies.setdefault(col["task"], []).append(col["strategy"])
        for sha, q in col["questions"].items():
            into = questions.setdefault((col["task"], sha), {
                "task": col["task"], "sha": sha, "doc": q["doc"], "prompt": None, "gold": None,
                "by": {}})
            into["prompt"] = into["prompt"] or q["prompt"]
            into["gold"] = into["gold"] or q["gold"]
            into["by"][col["strategy"]] = q["entry"]
    ordered = sorted(questions.values(), key=lambda q: (
        list(strategies).index(q["task"]), q["doc"] is None, q["doc"] or 0))
    for q in ordered:
        entries = list(q["by"].values())
        q["flags"] = {"wrong": any(e["right"] is False for e in entries),
                      "disagree": len(entries) > 1 and disagree(entries),
                      "fallback": any(bool(e.get("fallback")) for e in entries)}
    return {"title": run.name, "kind": kind, "strategies": strategies,
            "summary": [c["summary"] for c in columns], "questions": ordered}


def render(data: dict[str, Any]) -> str:
    """The page: the template with the data embedded. Every ``<`` in the JSON is written as
    ``\\u003c``, so no string in it (a prompt holding ``</script>``) can end the tag."""
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    page = TEMPLATE.read_text(encoding="utf-8")
    return page.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", blob)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="lm-eval-softreason view",
        description="Write one self-contained HTML page to read a run question by question: "
                    "an lm-eval results folder, a trace JSONL, or a compare folder.")
    p.add_argument("run", type=Path, help="lm-eval --output_path folder, trace JSONL, or "
                                          "compare results folder")
    p.add_argument("--trace", type=Path, help="the run's trace (default: the trace_path its "
                                              "results record)")
    p.add_argument("--output", "-o", type=Path, help="the page (default: RUN/view.html for a "
                                                     "folder, the trace's name with .html)")
    args = p.parse_args(argv)
    try:
        data = page_data(args.run, args.trace)
    except (ViewError, RescoreError) as exc:
        print(f"{p.prog}: error: {exc}", file=sys.stderr)
        return 2
    out = args.output or (args.run.with_suffix(".html") if args.run.is_file()
                          else args.run / "view.html")
    out.write_text(render(data), encoding="utf-8")
    print(f"wrote {out} ({len(data['questions'])} questions, "
          f"{out.stat().st_size / 1e6:.1f} MB)")
    return 0
