"""``lm-eval-softreason rescore``: what a finished run would have scored under another selection
rule, without loading a model.

    lm-eval-softreason rescore --trace T.jsonl --results OUT_DIR --select vote [--json R.json]

The rule's pick goes through the task's own filters and metrics as lm-eval scored the run, so
``--select best`` on a ``select=best`` run gives its samples back (joins and rules:
docs/architecture.md, "rescore").
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_eval_softreason.analysis.artifacts import request_args, sample_sha
from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.scoring.plugins import check_takes_one_argument, import_callable
from lm_eval_softreason.analysis.report import render_table
from lm_eval_softreason.scoring.candidate import Generation
from lm_eval_softreason.scoring.extraction import filter_ensembles
from lm_eval_softreason.scoring.selection import SELECTS, rank
from lm_eval_softreason.settings import fingerprint, prompt_sha
from lm_eval_softreason.trace import read_trace
from lm_eval_softreason.jsonl import read_jsonl

# A selection rule: one trace record in, the chosen candidate's full text out.
Rule = Callable[[dict[str, Any]], str]


class RescoreError(ValueError):
    """Inputs or a rule that rescore cannot use; the CLI prints it as one line."""


# ------------------------------------------------------------------------------------- rules


def generations(record: dict[str, Any]) -> list[Generation]:
    """A trace record's candidates as the search held them (what ``selection`` ranks)."""
    return [Generation(text=c["text"], tokens=c.get("tokens", 0), answer=c.get("answer"),
                       round=c.get("round", 0), r_verifier=c.get("r_verifier"),
                       r_coherence=c.get("r_coherence"), reward=c.get("reward"),
                       confidence=c.get("confidence"))
            for c in record["candidates"]]


def _rule(select: str) -> Rule:
    """The built-in rule ``select``: :func:`selection.rank` on the record's candidates and
    verifier answers, as the run itself would have chosen with model_arg ``select``."""

    def rule(record: dict[str, Any]) -> str:
        return rank(generations(record), select, record.get("verifier_answers") or [])[0].text

    rule.__name__ = select
    return rule


# Built-ins: ``best`` (the ``paper`` preset), ``vote`` (candidates + verifier answers, the
# reference implementation), ``vote_candidates``, ``vote_verifier_weighted`` and
# ``vote_coherence_weighted`` (see :data:`selection.VOTE_WEIGHTS`).
RULES: dict[str, Rule] = {name: _rule(name) for name in SELECTS}


def load_rule(spec: str) -> Rule:
    """A built-in rule by name, or ``package.module:function`` checked to take one record."""
    if spec in RULES:
        return RULES[spec]
    option = f"--select {spec!r}"
    if ":" not in spec:
        raise RescoreError(f"{option}: not a built-in rule ({', '.join(RULES)}) and not an "
                           f"import path 'package.module:function'")
    try:
        rule = import_callable(spec, option)
        check_takes_one_argument(rule, option, "fn(record: dict) -> str")
    except ConfigError as exc:
        raise RescoreError(str(exc)) from None
    return rule


def choose(rule: Rule, record: dict[str, Any]) -> str:
    """The rule's text for ``record``, refused unless it is one candidate's full text (the
    filters must read exactly what the run could have returned)."""
    text = rule(record)
    if not any(text == c["text"] for c in record["candidates"]):
        raise RescoreError(f"rule {getattr(rule, '__name__', rule)!r} returned {text!r:.80}, "
                           f"which is no candidate's full text (question {record.get('question')})")
    return text


# ------------------------------------------------------------------------------------ inputs



def samples_in(results: Path) -> list[Path]:
    """Every lm-eval samples file under a ``--output_path`` folder."""
    found = sorted(results.rglob("samples_*.jsonl"))
    if not found:
        raise RescoreError(f"no samples_*.jsonl under {results}: was the run made with "
                           f"--log_samples?")
    return found


def index_trace(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Trace records by ``prompt_sha``; a prompt answered twice (two runs in one file) is
    ambiguous and refused."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        sha = r["prompt_sha"]
        if sha in out and out[sha] != r:
            raise RescoreError(f"the trace holds two different records for prompt {sha}; pass "
                               f"the trace of one run")
        out[sha] = r
    return out



def results_beside(samples: Path) -> Path | None:
    """The results file written with a samples file: a ``compare`` cell's ``<stem>.json``
    beside ``<stem>.samples.jsonl``, or lm-eval's ``results_<time>.json`` beside
    ``samples_<task>_<time>.jsonl``; None where there is none."""
    name = samples.name
    if name.endswith(".samples.jsonl"):
        path = samples.with_name(name.removesuffix(".samples.jsonl") + ".json")
    elif name.startswith("samples_") and name.endswith(".jsonl"):
        path = samples.with_name(f"results_{samples.stem.rsplit('_', 1)[-1]}.json")
    else:
        return None
    return path if path.is_file() else None


def run_settings(results: Path) -> dict[str, Any] | None:
    """The softreason settings a results file records: ``config.softreason`` of lm-eval's
    results, ``lm_eval_config.softreason`` of a compare cell; None for another model's run."""
    try:
        data = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RescoreError(f"{results}: not a readable results file ({exc})") from None
    config = data.get("config") or data.get("lm_eval_config") or {}
    return config.get("softreason")


def check_trace(records: list[dict[str, Any]], samples: dict[Path, list[dict[str, Any]]],
                trace: Path) -> None:
    """Refuse a trace whose records do not belong to the run that wrote ``samples`` (each
    samples file with its rows), naming the first record that does not: its ``prompt_sha``
    must be one of the samples' prompts, and its ``config`` (``SoftReasonConfig.fingerprint``)
    the fingerprint of the ``config.softreason`` in the results file beside that samples file,
    where there is one. A trace of the same prompts under other settings (``sigma=3`` against a
    ``sigma=1`` run) would otherwise be re-selected, diagnosed or shown as that run's.

    Records of a task none of whose prompts are in ``samples`` are left alone (a trace of a
    multi-task run, given one task's samples); a trace none of whose records match is refused.
    rescore, diagnose and view all check here.
    """
    where = {sample_sha(row): path for path, rows in samples.items() for row in rows}
    tasks = {r.get("task") for r in records if r.get("prompt_sha") in where}
    expected: dict[Path, tuple[Path, str | None] | None] = {}  # samples -> results, its hash
    for number, record in enumerate(records, 1):
        sha = record.get("prompt_sha")
        name = f"{trace} record {number} (task {record.get('task')}, prompt_sha {sha})"
        path = where.get(sha)
        if path is None:
            if tasks and record.get("task") not in tasks:
                continue
            raise RescoreError(f"{name} is not from this run: its prompt is in none of "
                               f"{', '.join(sorted(str(p) for p in samples))}")
        if path not in expected:
            results = results_beside(path)
            settings = run_settings(results) if results is not None else None
            expected[path] = None if results is None else (
                results, fingerprint(settings) if settings else None)
        if expected[path] is None:
            continue
        results, want = expected[path]
        if want is None:
            raise RescoreError(f"{name} is not from this run: {results} records no "
                               f"softreason settings (config.softreason)")
        if record.get("config") != want:
            raise RescoreError(f"{name} is not from this run: its settings fingerprint "
                               f"(config) is {record.get('config')}, but {results}'s "
                               f"config.softreason fingerprints to {want}")


def task_of(rows: list[dict[str, Any]], trace: dict[str, dict[str, Any]], path: Path) -> str:
    """The task a samples file belongs to: the one its trace records name."""
    tasks = {trace[prompt_sha(request_args(r)[0])]["task"] for r in rows
             if prompt_sha(request_args(r)[0]) in trace}
    if len(tasks) != 1:
        raise RescoreError(f"{path}: its prompts match trace records of tasks "
                           f"{sorted(tasks) or 'none'}; expected exactly one task")
    return tasks.pop()


# ------------------------------------------------------------------------------------ scoring


def load_task(name: str) -> Any:
    """The task object as lm-eval builds it (our tasks folder first; the full index, ~13 s,
    only for other tasks). Its data is loaded as for a run; documents come from the samples."""
    from lm_eval_softreason.tasks_path import task_manager

    return task_manager([name]).load(name)["tasks"][name]


@dataclass
class TaskRescore:
    """One task's samples under the run's choice and under the rule."""

    task: str
    original: list[dict[str, Any]]
    rescored: list[dict[str, Any]]
    aggregation: dict[str, Callable[[list[Any]], float]]
    questions: int = 0
    texts_changed: int = 0
    kept: int = 0  # questions without a trace record or answered by the fallback
    metrics: list[tuple[str, str]] = field(default_factory=list)  # (filter, metric), in order


def rescore_task(task_name: str, rows: list[dict[str, Any]],
                 trace: dict[str, dict[str, Any]], rule: Rule, task: Any = None) -> TaskRescore:
    """Every question of ``rows`` (one task's samples, one row per filter) answered with the
    rule's text and scored with the task's filters and ``process_results``."""
    from lm_eval.api.instance import Instance

    task = task if task is not None else load_task(task_name)
    ensembles = filter_ensembles(task.config.filter_list)
    by_doc: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_doc[row["doc_id"]].append(row)
    out = TaskRescore(task_name, rows, [], task.aggregation())
    answered: dict[Any, Any] = {}  # doc_id -> its Instance, filtered by every pipeline
    for doc_id, doc_rows in by_doc.items():
        resps = doc_rows[0]["resps"]
        if len(resps) != 1 or len(resps[0]) != 1:
            raise RescoreError(f"{task_name}: document {doc_id} has {sum(map(len, resps))} "
                               f"responses; rescore handles tasks with one response per "
                               f"question (repeats: 1)")
        context, gen_kwargs = request_args(doc_rows[0])
        record = trace.get(prompt_sha(context))
        text = resps[0][0]
        if record is None or record.get("fallback") is not None or not record["candidates"]:
            out.kept += 1
        else:
            text = choose(rule, record)
        out.questions += 1
        out.texts_changed += text != resps[0][0]
        inst = Instance("generate_until", doc_rows[0]["doc"], (context, gen_kwargs), idx=0,
                        metadata=(task_name, doc_id, 1))
        inst.resps = [text]
        for ensemble in ensembles:
            ensemble.apply([inst])
        answered[doc_id] = inst
    for row in rows:  # in the samples' own order
        inst = answered[row["doc_id"]]
        filtered = inst.filtered_resps[row["filter"]]
        metrics = task.process_results(inst.doc, [filtered])
        out.rescored.append({**row, "resps": [inst.resps], "filtered_resps": [filtered],
                             **metrics})
        for m in metrics:
            if (row["filter"], m) not in out.metrics:
                out.metrics.append((row["filter"], m))
    return out


def summary(result: TaskRescore) -> dict[str, dict[str, Any]]:
    """Per ``metric,filter``: original and rescored value and stderr (lm-eval's aggregation and
    stderr), and how many questions' scores changed."""
    from lm_eval.api.metrics import stderr_for_metric

    out = {}
    for filt, metric in result.metrics:
        agg = result.aggregation[metric]
        stderr = stderr_for_metric(agg, bootstrap_iters=1000)
        before, after = ([r[metric] for r in rows if r["filter"] == filt]
                         for rows in (result.original, result.rescored))
        out[f"{metric},{filt}"] = {  # plain floats: metrics may hand back numpy scalars
            "original": float(agg(before)),
            "original_stderr": float(stderr(before)) if stderr else None,
            "rescored": float(agg(after)),
            "rescored_stderr": float(stderr(after)) if stderr else None,
            "changed": int(sum(bool(a != b) for a, b in zip(before, after))), "n": len(after),
        }
    return out


def _value(v: float, se: float | None) -> str:
    return f"{v:.4f}" + (f" ± {se:.4f}" if se is not None else "")


def render(results: list[TaskRescore], select: str) -> str:
    """Original vs rescored per task and metric, then what was re-selected."""
    rows = []
    for r in results:
        for key, s in summary(r).items():
            metric, _, filt = key.partition(",")
            rows.append([r.task, filt, metric, str(s["n"]),
                         _value(s["original"], s["original_stderr"]),
                         _value(s["rescored"], s["rescored_stderr"]), str(s["changed"])])
    table = render_table(["task", "filter", "metric", "n", "original", f"select={select}",
                          "scores changed"], rows, numeric={3, 4, 5, 6})
    notes = [f"{r.task}: returned text changed on {r.texts_changed} of {r.questions} questions; "
             f"{r.kept} kept the run's response (no trace record, or the greedy fallback)"
             for r in results]
    return "\n".join([table, "", *notes])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="lm-eval-softreason rescore",
        description="Re-select every question's answer of a finished run under another rule and "
                    "re-score it with the task's own filters and metrics (no model is loaded).")
    p.add_argument("--trace", required=True, type=Path, help="the run's trace_path JSONL")
    p.add_argument("--samples", action="append", default=[], type=Path,
                   help="an lm-eval samples JSONL of the run (repeatable)")
    p.add_argument("--results", type=Path,
                   help="the run's --output_path folder (written with --log_samples); every "
                        "samples_*.jsonl under it is used")
    p.add_argument("--select", default="vote",
                   help=f"built-in rule ({', '.join(RULES)}; default: vote) or "
                        f"'package.module:function' taking one trace record and returning a "
                        f"candidate's text")
    p.add_argument("--json", type=Path, help="also write the comparison to this JSON file")
    args = p.parse_args(argv)
    try:
        rule = load_rule(args.select)
        paths = list(args.samples) + (samples_in(args.results) if args.results else [])
        if not paths:
            raise RescoreError("give --samples FILE or --results DIR")
        records = read_trace(args.trace)
        samples = {path: read_jsonl(path) for path in paths}
        check_trace(records, samples, args.trace)
        trace = index_trace(records)
        by_task: dict[str, list[dict[str, Any]]] = {}
        for path, rows in samples.items():
            name = task_of(rows, trace, path)
            if name in by_task:
                raise RescoreError(f"two samples files of task {name!r}; pass one with --samples")
            by_task[name] = rows
        results = [rescore_task(name, rows, trace, rule) for name, rows in by_task.items()]
    except RescoreError as exc:
        p.error(str(exc))
    print(render(results, args.select))
    if args.json:
        args.json.write_text(json.dumps({
            "select": args.select,
            "tasks": {r.task: {"questions": r.questions, "texts_changed": r.texts_changed,
                               "kept": r.kept, "metrics": summary(r)} for r in results},
        }, indent=2) + "\n", encoding="utf-8")
    return 0


def candidate_scores(task_name: str, samples: Sequence[dict[str, Any]],
                     trace: dict[str, dict[str, Any]], filter_name: str = "flexible-extract",
                     metric: str = "exact_match", task: Any = None) -> dict[str, list[float]]:
    """Per ``prompt_sha``, the task's own ``metric`` under ``filter_name`` of every candidate's
    text (through ``rescore``: the task's filter pipelines and ``process_results``)."""
    task = task if task is not None else load_task(task_name)
    shas = {row["doc_id"]: prompt_sha(request_args(row)[0]) for row in samples}
    n_max = max(len(r["candidates"]) for r in trace.values())
    scores: dict[str, list[float]] = {sha: [] for sha in trace}
    for i in range(n_max):
        def pick(record: dict[str, Any], i: int = i) -> str:
            return record["candidates"][min(i, len(record["candidates"]) - 1)]["text"]

        done = rescore_task(task_name, list(samples), trace, pick, task)
        for row in done.rescored:
            sha = shas[row["doc_id"]]
            if row["filter"] == filter_name and sha in scores \
                    and i < len(trace[sha]["candidates"]):
                scores[sha].append(float(row[metric]))
    return scores
