"""``lm-eval-softreason compare``: decoding strategies on the same tasks, prompts, filters
and metrics.

Every (task, strategy) cell is one in-process ``lm_eval.simple_evaluate`` run of one
``softreason`` model, switched to the strategy's model_args with ``configure``; the weights are
loaded once per process and shared by every cell. Results go to one folder::

    OUT/cells/<task>__<strategy>.json           metrics, tokens, time, settings (written last)
    OUT/cells/<task>__<strategy>.samples.jsonl  lm-eval's logged samples
    OUT/cells/<task>__<strategy>.trace.jsonl    the per-question search trace (trace_path)
    OUT/cells/<task>__<strategy>.digest.jsonl   per-question scores, no prompts (``digest``)
    OUT/cells/<task>__<strategy>.progress.json  an unfinished cell's spec and attempts
    OUT/cells/<task>__<strategy>.cache_rank0.db an unfinished cell's answers (lm-eval use_cache)
    OUT/table.md                                the Markdown table also printed to stdout
    OUT/accuracy_vs_tokens.png                  accuracy (flexible) vs generated tokens/question

A finished cell is skipped on rerun. An interrupted softreason-model cell resumes inside the
cell: its finished questions are served from its cache and only the others are decoded (see
``start_attempt``); the cell file's numbers come from the trace, which holds every
question once, so they cover all attempts. Progress file and cache are deleted once the cell
file is written.

Samples and traces hold the benchmark's documents, so a committed folder keeps only cell files
and digests: enough to skip its finished cells, rebuild table and plot (maj@k curves included)
and run ``diagnose --versus`` against it in a later session.

Self-consistency (``sc``) is budget-matched: its number of samples is
``round(softreason tokens/question / greedy tokens/question)`` (at least 1), measured on the
same task, so ``greedy`` and ``softreason`` of a task always run before its ``sc`` cell
(``--sc-match`` matches another softreason strategy instead; ``--sc-n`` fixes N). See
docs/results.md.

Example::

    lm-eval-softreason compare --model MODEL_DIR --tasks svamp,gsm8k_cot_zeroshot_offline \\
        --strategies greedy,sc,softreason --limit svamp=100,gsm8k_cot_zeroshot_offline=50 \\
        --apply-chat-template --out results/compare
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import functools
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lm_eval_softreason.report import render_table
from lm_eval_softreason.settings import CELL_SCHEMA, cell_stem, comparable_spec
from lm_eval_softreason.trace import read_trace

BUDGET_STRATEGY = "sc"
BUDGET_REFERENCE = "softreason"  # what sc's budget is matched to by default (--sc-match) ...
BUDGET_UNIT = "greedy"  # ... in units of one greedy chain
HF_SC_TASK = "gsm8k_cot_self_consistency_offline"
HF_SC_STRATEGY = "hf_sc"
HF_SC_REPEATS = 64  # the task's own number of samples per question
HF_DEFAULT_BATCH = 16  # HFLM's batch_size=auto probes huge batches; too slow on a CPU
# lm.py's fallback reason for a question whose prompt could not be run at all: it gets no
# strategy, hence no trace record, and is never streamed to the cache, so a resumed cell finds
# every such question in its last attempt's stats.
UNTRACED_FALLBACK = "prompt could not be run"
PROGRESS_SUFFIX = ".progress.json"  # cells/<stem>.progress.json: not a cell file


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A named set of softreason model_args."""

    name: str
    model_args: dict[str, Any]
    help: str


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("greedy", {"mode": "greedy"}, "plain greedy chain of thought"),
        Strategy("sc", {"mode": "sample"},
                 "self-consistency: n_samples at --sc-temperature, majority vote; "
                 "n_samples budget-matched to softreason"),
        Strategy("softreason", {"mode": "softreason", "preset": "paper"},
                 "Soft Reasoning as in the paper (verifier + coherence, BO)"),
        Strategy("softreason_noverifier", {"mode": "softreason", "preset": "paper",
                                           "verifier": "none"},
                 "ablation: coherence only"),
        Strategy("softreason_nocoherence", {"mode": "softreason", "preset": "paper",
                                            "coherence": "none"},
                 "ablation: verifier only"),
        Strategy("softreason_random", {"mode": "softreason", "preset": "paper",
                                       "search": "random"},
                 "ablation: random search instead of Bayesian optimisation"),
        Strategy("softreason_reference", {"mode": "softreason", "preset": "reference"},
                 "the reference code's variant (A^T u injection, mean prob, vote)"),
        Strategy("softreason_tuned", {"mode": "softreason", "preset": "tuned"},
                 "the tuning study's choice (docs/tuning.md), its own budget included"),
        Strategy("fire", {"mode": "fire"}, "FIRE: first token at high temperature, then greedy"),
        Strategy("cot_decoding", {"mode": "cot_decoding"},
                 "CoT-decoding: top-k first tokens, pick by answer confidence"),
    )
}
# Table/plot order; hf_sc (lm-eval's gsm8k_cot_self_consistency, offline copy, with --model hf)
# is last.
ORDER = [*STRATEGIES, HF_SC_STRATEGY]


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lm-eval-softreason compare",
        description="Run decoding strategies on tasks in the same harness; write one results "
                    "folder (resumable), a Markdown table and an accuracy-vs-tokens plot.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="strategies:\n" + "\n".join(
            f"  {s.name:<24} {s.help}" for s in STRATEGIES.values()),
    )
    p.add_argument("--model", help="pretrained model folder (or Hub id), loaded once")
    p.add_argument("--tasks", default="svamp", help="comma-separated task names")
    p.add_argument("--strategies", default="greedy,softreason,sc",
                   help="comma-separated strategy names (see below)")
    p.add_argument("--limit", default=None,
                   help="questions per task: N for every task, or task=N pairs "
                        "(svamp=100,gsm8k_cot_zeroshot_offline=50), optionally with a bare "
                        "default N")
    p.add_argument("--seed", type=int, default=1234,
                   help="lm-eval's random/numpy/torch/fewshot seeds and model_arg seed")
    p.add_argument("--apply-chat-template", action="store_true",
                   help="forwarded to lm-eval (apply_chat_template=True)")
    p.add_argument("--batch-size", default="16",
                   help="rows decoded together (int or 'auto'); lm-eval's batch_size")
    p.add_argument("--dtype", default="auto", help="model dtype (auto, float32, bfloat16, ...)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                   help="what decodes the softreason-model cells: hf (--model softreason) or "
                        "vllm (--model softreason-vllm; engine args such as enforce_eager=True "
                        "go in --extra-model-args); hf_sc always uses lm-eval's hf model")
    p.add_argument("--extra-model-args", default="",
                   help="key=value,... added to every cell's model_args (a strategy's own "
                        "keys win), e.g. max_rounds=2,sigma=0.5")
    p.add_argument("--gen-kwargs", default=None,
                   help="forwarded to lm-eval's gen_kwargs, e.g. max_gen_toks=256")
    p.add_argument("--sc-temperature", type=float, default=0.7,
                   help="sampling temperature of sc (default 0.7)")
    p.add_argument("--sc-n", type=int, default=None,
                   help="fix sc's n_samples instead of matching softreason's token budget")
    p.add_argument("--sc-match", default=BUDGET_REFERENCE, metavar="STRATEGY",
                   help=f"the softreason strategy whose generated tokens/question sc's "
                        f"n_samples is matched to (default {BUDGET_REFERENCE})")
    p.add_argument("--baseline-hf-sc", action="store_true",
                   help=f"also run lm-eval's own {HF_SC_TASK} with --model hf as a cross-check")
    p.add_argument("--hf-sc-repeats", type=int, default=None,
                   help=f"samples per question of {HF_SC_TASK} (the task's default is 64)")
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild table.md and the plot from OUT/cells")
    return p


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# A task's limit: None (all), N or a fraction (lm-eval's --limit), or "A:B" (documents A..B-1).
Limit = int | float | str | None


def parse_limits(value: str | None, tasks: list[str]) -> dict[str, Limit]:
    """``"100"`` -> every task 100; ``"50,svamp=100"`` -> svamp 100, others 50;
    ``"svamp=500:600"`` -> svamp's documents 500..599 (tuning problems, say)."""
    if value is None or not value.strip():
        return {t: None for t in tasks}
    default: Limit = None
    per_task: dict[str, Limit] = {}
    for part in _split_list(value):
        name, sep, number = part.rpartition("=")
        n = _number(number, part)
        if sep:
            per_task[name.strip()] = n
        else:
            default = n
    unknown = sorted(set(per_task) - set(tasks) - {HF_SC_TASK})
    if unknown:
        raise SystemExit(f"--limit names task(s) not in --tasks: {', '.join(unknown)}")
    return {t: per_task.get(t, default) for t in [*tasks, HF_SC_TASK]}


def _number(text: str, part: str) -> Limit:
    start, colon, stop = text.partition(":")
    if colon:
        if not (start.strip().isdigit() and stop.strip().isdigit()
                and int(start) < int(stop)):
            raise SystemExit(f"--limit: {part!r}: a range is A:B with integers 0 <= A < B")
        return f"{int(start)}:{int(stop)}"
    try:
        n = float(text)
    except ValueError:
        raise SystemExit(f"--limit: {part!r} is not N, A:B, task=N or task=A:B") from None
    if n <= 0:
        raise SystemExit(f"--limit: {part!r} must be positive")
    return int(n) if n.is_integer() else n


def parse_kv(text: str | None) -> dict[str, Any]:
    """lm-eval's ``key=value,...`` parsing (numbers and booleans converted)."""
    if not text:
        return {}
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(text)


# --- results folder ----------------------------------------------------------------------------


def cell_paths(out: Path, task: str, strategy: str) -> dict[str, Path]:
    """A cell's files; ``progress`` and ``cache`` (the ``use_cache`` prefix, to which lm-eval
    appends ``_rank0.db``) exist only while a softreason-model cell is unfinished."""
    stem = cell_stem(task, strategy)
    cells = out / "cells"
    return {"cell": cells / f"{stem}.json", "samples": cells / f"{stem}.samples.jsonl",
            "trace": cells / f"{stem}.trace.jsonl",
            "progress": cells / f"{stem}{PROGRESS_SUFFIX}", "cache": cells / f"{stem}.cache"}


def remove_cache(prefix: Path) -> None:
    """Delete lm-eval's cache database(s) of ``use_cache`` prefix ``prefix`` with any SQLite
    journal beside them (a journal left beside a new database would be replayed into it)."""
    for path in prefix.parent.glob(f"{prefix.name}_rank*.db*"):
        path.unlink()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None if it is missing, unreadable or not an object (a file an
    interrupted run may have left half-written or never written)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def read_cell(path: Path) -> dict[str, Any] | None:
    cell = read_json_object(path)
    return cell if cell is not None and cell.get("schema") == CELL_SCHEMA else None


def load_cells(out: Path) -> list[dict[str, Any]]:
    cells = []
    for path in sorted((out / "cells").glob("*.json")):
        if path.name.endswith(PROGRESS_SUFFIX):
            continue
        cell = read_cell(path)
        if cell is None:
            print(f"ignoring unreadable cell {path.name}", file=sys.stderr)
        else:
            cells.append(cell)
    return cells


# --- what one cell runs ------------------------------------------------------------------------


@dataclasses.dataclass
class RunSettings:
    """Settings shared by every cell of one invocation."""

    model: str
    limits: dict[str, Limit]
    seed: int
    apply_chat_template: bool
    batch_size: str
    dtype: str
    device: str
    extra_model_args: dict[str, Any]
    gen_kwargs: dict[str, Any]
    sc_temperature: float
    sc_n: int | None
    hf_sc_repeats: int | None
    engine: str = "hf"
    sc_match: str = BUDGET_REFERENCE

    def spec(self, task: str, strategy: str) -> dict[str, Any]:
        """What must agree for a stored cell to count as this run's cell.

        The model is compared by folder name so a results folder holds no machine paths;
        batch size and device only change speed, so they are left out.
        """
        spec = {
            "task": task, "strategy": strategy,
            "model": model_name(self.model),
            "limit": self.limits.get(task), "seed": self.seed,
            "apply_chat_template": self.apply_chat_template, "dtype": self.dtype,
            "gen_kwargs": self.gen_kwargs,
        }
        if self.engine != "hf" and strategy != HF_SC_STRATEGY:
            spec["engine"] = self.engine  # absent for hf: folders written before still match
        if strategy == HF_SC_STRATEGY:
            spec["repeats"] = self.hf_sc_repeats
            spec["extra_model_args"] = hf_args(self.extra_model_args)
        else:
            spec["model_args"] = strategy_model_args(strategy, self)
            values = preset_values(spec["model_args"])
            if values:
                spec["preset_values"] = values
        if strategy == BUDGET_STRATEGY:
            spec["sc_n"] = self.sc_n  # None: matched to the measured budget
            if self.sc_n is None and self.sc_match != BUDGET_REFERENCE:
                spec["sc_match"] = self.sc_match  # absent by default: older folders match
        return spec


def strategy_model_args(strategy: str, st: RunSettings) -> dict[str, Any]:
    """The softreason model_args of a strategy (without n_samples/trace_path, set per cell)."""
    args = {**st.extra_model_args, **STRATEGIES[strategy].model_args, "seed": st.seed}
    if strategy == BUDGET_STRATEGY:
        args["temperature"] = st.sc_temperature
    return args


def preset_values(model_args: dict[str, Any]) -> dict[str, Any]:
    """The values a softreason strategy's preset resolves to, after the model_args that
    override it ({} outside softreason mode). A preset can change its values under the same
    name (``tuned`` did when the tuning study finished), and a cell searched under the old
    values is not this run's cell, although its model_args read the same."""
    from lm_eval_softreason.config import PRESET_VALUES, SoftReasonConfig

    cfg, _ = SoftReasonConfig.from_kwargs(dict(model_args))
    if cfg.mode != "softreason":
        return {}
    resolved = cfg.public_dict()
    return {k: resolved[k] for k in sorted(PRESET_VALUES[cfg.preset])}


def hf_args(extra: dict[str, Any]) -> dict[str, Any]:
    """The extra model_args that HFLM understands (softreason's own are dropped)."""
    from lm_eval_softreason.config import SoftReasonConfig

    _, rest = SoftReasonConfig.from_kwargs(extra)
    return rest


def softreason_args(args: dict[str, Any]) -> dict[str, Any]:
    """The model_args of ``args`` that are softreason's own (what ``configure`` takes)."""
    rest = hf_args(args)
    return {k: v for k, v in args.items() if k not in rest}


def model_name(path: str) -> str:
    """The model as cells record it: its folder name, so a results folder holds no machine
    paths."""
    return Path(os.path.normpath(path)).name


def hf_sc_config(task_manager: Any, repeats: int) -> dict[str, Any]:
    """gsm8k_cot_self_consistency_offline's full config with ``repeats`` samples per question.

    Its vote over all samples is renamed ``maj@64`` -> ``maj@<repeats>``; a ``maj@k`` vote over
    the first k samples is kept only for k < repeats (lm-eval asserts that k samples exist).
    """
    from lm_eval_softreason.compat import entry_config

    cfg = entry_config(task_manager.task_index[HF_SC_TASK])
    cfg["repeats"] = int(repeats)
    filters = []
    for f in cfg.get("filter_list", []):
        name = str(f.get("name", ""))
        if name == f"maj@{HF_SC_REPEATS}":
            f = {**f, "name": f"maj@{repeats}"}
        elif name.startswith("maj@") and name[4:].isdigit() and int(name[4:]) >= repeats:
            continue
        filters.append(f)
    cfg["filter_list"] = filters
    return cfg


def check_spec(cell: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """How a stored cell's settings differ from this run's, in the settings that change
    results (``settings.comparable_spec``)."""
    stored = comparable_spec(cell.get("spec", {}))
    norm = comparable_spec(spec)
    if "preset_values" in norm and "preset_values" not in stored:
        # written before specs held them: the finished cell's resolved settings have them
        ran = cell.get("lm_eval_config", {}).get("softreason")
        stored["preset_values"] = ran and {k: ran.get(k) for k in norm["preset_values"]}
    return [f"{k}: stored {stored.get(k)!r}, now {norm.get(k)!r}"
            for k in sorted(set(stored) | set(norm)) if stored.get(k) != norm.get(k)]


def budget_samples(out: Path, task: str, st: RunSettings) -> dict[str, Any]:
    """sc's n_samples: the ``--sc-match`` strategy's generated tokens/question (verifier
    tokens included) over greedy's, rounded half up, at least 1; both measured on this task in
    this folder."""
    if st.sc_n is not None:
        return {"n_samples": st.sc_n, "source": "--sc-n"}
    per_q = {}
    for name in (st.sc_match, BUDGET_UNIT):
        cell = read_cell(cell_paths(out, task, name)["cell"])
        if cell is None:
            raise RuntimeError(f"budget matching for {task}: the {name} cell is missing")
        per_q[name] = float(cell["tokens_generated_per_q"])
    ratio = per_q[st.sc_match] / per_q[BUDGET_UNIT] if per_q[BUDGET_UNIT] > 0 else 1.0
    return {
        "n_samples": max(1, math.floor(ratio + 0.5)), "source": "matched",
        f"{st.sc_match}_tokens_per_q": per_q[st.sc_match],
        f"{BUDGET_UNIT}_tokens_per_q": per_q[BUDGET_UNIT], "ratio": ratio,
    }


def plan_cells(tasks: list[str], strategies: list[str], baseline_hf_sc: bool,
               sc_match: str = BUDGET_REFERENCE) -> list[tuple[str, str]]:
    """(task, strategy) in run order: per task, greedy and the strategy sc is matched to
    first, sc last."""
    first = [s for s in (BUDGET_UNIT, sc_match) if s in strategies]
    middle = [s for s in strategies if s not in first and s != BUDGET_STRATEGY]
    last = [BUDGET_STRATEGY] if BUDGET_STRATEGY in strategies else []
    cells = [(t, s) for t in tasks for s in first + middle + last]
    if baseline_hf_sc:
        cells.append((HF_SC_TASK, HF_SC_STRATEGY))
    return cells


# --- running -----------------------------------------------------------------------------------


class Runner:
    """Loads the model once and evaluates cells with it."""

    def __init__(self, st: RunSettings, out: Path) -> None:
        self.st = st
        self.out = out
        self._base = None
        self._softreason = None
        self._task_manager = None

    @property
    def base(self):  # type: ignore[no-untyped-def]
        """A plain HFLM holding the weights and tokenizer that every cell shares."""
        if self._base is None:
            from lm_eval.models.huggingface import HFLM

            started = time.perf_counter()
            self._base = HFLM(pretrained=self.st.model, dtype=self.st.dtype,
                              device=self.st.device, batch_size=self._hf_batch(),
                              **hf_args(self.st.extra_model_args))
            print(f"loaded {self.st.model} in {time.perf_counter() - started:.1f}s", flush=True)
        return self._base

    @property
    def softreason(self):  # type: ignore[no-untyped-def]
        """One softreason model around the shared weights (on vLLM: its own engine); each cell
        ``configure`` s it."""
        if self._softreason is None and self.st.engine == "vllm":
            from lm_eval_softreason.model_vllm import SoftReasonVLLM

            started = time.perf_counter()
            self._softreason = SoftReasonVLLM(
                pretrained=self.st.model, dtype=self.st.dtype, batch_size=self.st.batch_size,
                **hf_args(self.st.extra_model_args))
            print(f"started vLLM on {self.st.model} in {time.perf_counter() - started:.1f}s",
                  flush=True)
        if self._softreason is None:
            from lm_eval_softreason.model import SoftReasonLM

            self._softreason = SoftReasonLM(
                pretrained=self.base.model, tokenizer=self.base.tokenizer,
                batch_size=self.st.batch_size, **hf_args(self.st.extra_model_args))
        return self._softreason

    def task_manager(self, tasks: list[str]):  # type: ignore[no-untyped-def]
        """Our tasks folder only (instant); the full lm-eval index (~13 s) only if needed."""
        from lm_eval.tasks import TaskManager

        from lm_eval_softreason.tasks_path import tasks_dir

        if self._task_manager is None:
            self._task_manager = TaskManager(include_path=tasks_dir(), include_defaults=False)
        if not set(tasks) <= set(self._task_manager.all_tasks):
            self._task_manager = TaskManager(include_path=tasks_dir())
        return self._task_manager

    def _hf_batch(self) -> int:
        bs = self.st.batch_size
        return int(bs) if str(bs).isdigit() else HF_DEFAULT_BATCH

    def _evaluate(self, lm: Any, task: Any, task_name: str, use_cache: Path | None = None
                  ) -> tuple[dict, float]:
        import lm_eval

        st = self.st
        limit = st.limits.get(task_name)
        samples = None
        if isinstance(limit, str):  # "A:B"
            start, stop = map(int, limit.split(":"))
            samples, limit = {task_name: list(range(start, stop))}, None
        started = time.perf_counter()
        results = lm_eval.simple_evaluate(
            model=lm, tasks=[task], limit=limit, samples=samples,
            random_seed=st.seed, numpy_random_seed=st.seed, torch_random_seed=st.seed,
            fewshot_random_seed=st.seed, apply_chat_template=st.apply_chat_template,
            gen_kwargs=dict(st.gen_kwargs) or None, log_samples=True,
            task_manager=self.task_manager([task_name]),
            use_cache=None if use_cache is None else str(use_cache),
        )
        return results, time.perf_counter() - started

    def run_cell(self, task: str, strategy: str) -> dict[str, Any]:
        if strategy == HF_SC_STRATEGY:
            return self._run_hf_sc()
        paths = cell_paths(self.out, task, strategy)
        args = strategy_model_args(strategy, self.st)
        spec = self.st.spec(task, strategy)
        budget = None
        if strategy == BUDGET_STRATEGY:
            budget = budget_samples(self.out, task, self.st)
            args["n_samples"] = spec["n_samples"] = budget["n_samples"]
            print(f"{task}: sc uses n_samples={budget['n_samples']} ({budget['source']})",
                  flush=True)
        lm = self.softreason
        progress = start_attempt(paths, spec, f"{task} / {strategy}")
        lm.configure(**softreason_args(args), trace_path=str(paths["trace"]))  # zeroes stats
        try:
            results, cell_wall = self._evaluate(lm, task, task, use_cache=paths["cache"])
        finally:
            close_cache(lm)
            lm.close_trace()  # unlocked: a rerun in this process may write it again
        counted = lm.get_model_info()["softreason_stats"]  # this attempt's questions only
        progress["attempts"][-1]["wall_time_s"] = counted["wall_time_s"]
        stats = trace_stats(read_trace(paths["trace"]),
                            sum(a["wall_time_s"] for a in progress["attempts"]))
        untraced = counted["fallback_reasons"].get(UNTRACED_FALLBACK, 0)
        if untraced:
            stats["fallbacks"] += untraced
            stats["fallback_reasons"][UNTRACED_FALLBACK] = untraced

        questions = stats["questions"]
        cell = self._cell(task, strategy, results, cell_wall)
        cell["attempts"] = len(progress["attempts"])
        cell["label"] = (f"{strategy} (N={args['n_samples']})" if budget else strategy)
        cell.update(per_question(stats, questions))
        cell["stats"] = stats
        recorded = {"pretrained": model_name(self.st.model),
                    "dtype": self.st.dtype, "batch_size": self.st.batch_size, **args,
                    "trace_path": f"cells/{paths['trace'].name}"}
        cell["model_args"] = recorded
        cell["model_args_string"] = ",".join(f"{k}={v}" for k, v in recorded.items())
        if budget:
            cell["budget"] = budget
        self._write(paths, cell, results, task)
        # Finished: a rerun after deleting the cell file starts clean.
        remove_cache(paths["cache"])
        paths["progress"].unlink()
        return cell

    def _run_hf_sc(self) -> dict[str, Any]:
        """lm-eval's gsm8k_cot_self_consistency (our offline copy: same prompt, filters and
        metrics) with a plain HFLM (``--model hf``).

        An interrupted hf_sc cell starts over: HFLM does not stream answers to a cache (and
        lm-eval never caches this task's sampled requests), so there is nothing to resume from.
        """
        task_name, strategy = HF_SC_TASK, HF_SC_STRATEGY
        paths = cell_paths(self.out, task_name, strategy)
        base = self.base
        lm = _timed_hflm()(pretrained=base.model, tokenizer=base.tokenizer,
                           batch_size=self._hf_batch(), **hf_args(self.st.extra_model_args))
        tm = self.task_manager([task_name])
        spec: Any = task_name
        if self.st.hf_sc_repeats is not None:
            spec = hf_sc_config(tm, self.st.hf_sc_repeats)
        task = tm.load([spec])["tasks"][task_name]
        repeats = int(task.config.repeats)
        results, cell_wall = self._evaluate(lm, task, task_name)

        samples = results.get("samples", {}).get(task_name, [])
        generated = prefilled = 0
        for s in samples:
            context = _sample_context(s)
            n_ctx = len(base.tok_encode(context)) if context else 0
            for text in _sample_responses(s):
                generated += len(base.tok_encode(text))
                prefilled += n_ctx
        questions = len(samples)
        stats = {"questions": questions, "tokens_generated": generated,
                 "tokens_prefilled": prefilled, "verifier_tokens": 0,
                 "wall_time_s": lm.generate_time_s}

        vote = f"maj@{repeats}"
        cell = self._cell(task_name, strategy, results, cell_wall,
                          strict_filter=vote, flexible_filter=None)
        cell["label"] = f"{strategy} (N={repeats})"
        cell.update(per_question(stats, questions))
        cell["stats"] = stats
        cell["repeats"] = repeats
        cell["note"] = (f"lm-eval's {task_name} (8-shot CoT, T=0.2) with --model hf; strict = "
                        f"exact_match,{vote} (vote over all {repeats} samples); "
                        "tokens re-counted from the logged samples")
        recorded = {"pretrained": model_name(self.st.model),
                    "dtype": self.st.dtype, "batch_size": self._hf_batch(),
                    **hf_args(self.st.extra_model_args)}
        cell["model_args"] = recorded
        cell["model_args_string"] = ",".join(f"{k}={v}" for k, v in recorded.items())
        self._write(paths, cell, results, task_name)
        return cell

    def _cell(self, task: str, strategy: str, results: dict, cell_wall: float,
              strict_filter: str | None = "strict-match",
              flexible_filter: str | None = "flexible-extract") -> dict[str, Any]:
        import lm_eval
        import torch

        import lm_eval_softreason

        task_results = results["results"].get(task, {})
        n_samples = results.get("n-samples", {}).get(task, {})
        return {
            "schema": CELL_SCHEMA,
            "task": task,
            "strategy": strategy,
            "spec": json.loads(json.dumps(self.st.spec(task, strategy), default=str)),
            "accuracy_strict": _metric(task_results, strict_filter),
            "accuracy_flexible": _metric(task_results, flexible_filter),
            "stderr_strict": _metric(task_results, strict_filter, stderr=True),
            "stderr_flexible": _metric(task_results, flexible_filter, stderr=True),
            "metrics": {k: v for k, v in task_results.items() if k != "alias"},
            "n": n_samples.get("effective"),
            "cell_wall_time_s": cell_wall,
            "lm_eval_version": getattr(lm_eval, "__version__", "unknown"),
            "lm_eval_softreason_version": lm_eval_softreason.__version__,
            "torch_version": torch.__version__,
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "files": {"samples": f"cells/{cell_stem(task, strategy)}.samples.jsonl",
                      "trace": (None if strategy == HF_SC_STRATEGY
                                else f"cells/{cell_stem(task, strategy)}.trace.jsonl")},
            "lm_eval_config": _jsonable(_config_without_paths(results.get("config", {}))),
        }

    def _write(self, paths: dict[str, Path], cell: dict, results: dict, task: str) -> None:
        from lm_eval.utils import handle_non_serializable

        samples = results.get("samples", {}).get(task, [])
        write_atomic(paths["samples"], "".join(
            json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n"
            for s in samples))
        write_digest(self.out, task, cell["strategy"])
        # The cell file is written last: its presence marks the cell finished.
        write_atomic(paths["cell"], json.dumps(cell, indent=2, default=str) + "\n")


@functools.cache
def _timed_hflm() -> type:
    """``HFLM`` adding up the time spent in ``generate_until`` (the hf_sc cell's wall s/q);
    built on first use so that ``--help`` and ``--report-only`` never import lm-eval's models."""
    from lm_eval.models.huggingface import HFLM

    class TimedHFLM(HFLM):
        generate_time_s = 0.0

        def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
            started = time.perf_counter()
            try:
                return super().generate_until(requests, disable_tqdm=disable_tqdm)
            finally:
                self.generate_time_s += time.perf_counter() - started

    return TimedHFLM


def write_digest(out: Path, task: str, strategy: str) -> None:
    """The cell's ``digest`` file, from its samples and trace."""
    from lm_eval_softreason import digest

    write_atomic(digest.path_of(out, task, strategy),
                 digest.dumps(digest.build(out, task, strategy)))


def start_attempt(paths: dict[str, Path], spec: dict[str, Any], name: str
                  ) -> dict[str, Any]:
    """Resume the cell if its progress file holds this ``spec`` (and its trace is there),
    else delete whatever an earlier attempt left and start clean; record this attempt.

    Wall time counts every attempt: a completed one its generate time (the model's
    ``wall_time_s``); a killed one, which had no chance to say, the time from its start
    to its last trace line (the trace file's mtime), 0 if it wrote none. The killed
    attempt's share is computed here, when the next one starts, before the trace is
    reopened (reopening can cut a partial last line, which moves the mtime).
    """
    progress = read_progress(paths["progress"])
    if progress is not None and not check_spec(progress, spec) and paths["trace"].exists():
        killed = progress["attempts"][-1]
        killed["wall_time_s"] = max(0.0, paths["trace"].stat().st_mtime - killed["started"])
        print(f"resume {name}: {len(read_trace(paths['trace']))} questions already done "
              f"(attempt {len(progress['attempts']) + 1})", flush=True)
    else:
        for key in ("trace", "progress"):
            paths[key].unlink(missing_ok=True)
        remove_cache(paths["cache"])
        progress = {"spec": spec, "attempts": []}
    progress["attempts"].append({"started": time.time(), "wall_time_s": None})
    write_atomic(paths["progress"], json.dumps(progress, indent=1, default=str) + "\n")
    return progress


def read_progress(path: Path) -> dict[str, Any] | None:
    """An unfinished cell's progress file, or None if there is none (or it is unreadable)."""
    progress = read_json_object(path)
    return progress if progress is not None and progress.get("attempts") else None


def trace_stats(records: list[dict[str, Any]], wall_time_s: float) -> dict[str, Any]:
    """A cell's totals from its trace records, which hold every question once whichever
    attempt decoded it (the model's own stats count only the current attempt's questions),
    and the wall time of all its attempts."""
    reasons = Counter(r["fallback"].split(":")[0] for r in records if r["fallback"] is not None)
    return {
        "questions": len(records),
        "fallbacks": sum(reasons.values()),
        "rounds": sum(r["rounds"] for r in records),
        "candidates": sum(len(r["candidates"]) for r in records),
        "tokens_generated": sum(r["tokens_generated"] for r in records),
        "tokens_prefilled": sum(r["tokens_prefilled"] for r in records),
        "verifier_tokens": sum(r["verifier_tokens"] for r in records),
        "wall_time_s": wall_time_s,
        "fallback_reasons": dict(reasons),
    }


def close_cache(lm: Any) -> None:
    """Close the cell's cache database and unhook it from the shared model, which the next
    cell hooks to its own."""
    from lm_eval.api.model import CacheHook

    if lm.cache_hook.dbdict is not None:
        lm.cache_hook.dbdict.close()
    lm.set_cache_hook(CacheHook(None))


def per_question(stats: dict[str, Any], questions: int) -> dict[str, float | None]:
    def mean(key: str) -> float | None:
        return stats.get(key, 0) / questions if questions else None

    return {
        "questions": questions,
        # tokens_generated already counts the verifier's tokens (a subset: verifier_tokens).
        "tokens_generated_per_q": mean("tokens_generated"),
        "verifier_tokens_per_q": mean("verifier_tokens"),
        "tokens_prefilled_per_q": mean("tokens_prefilled"),
        "wall_time_per_q_s": mean("wall_time_s"),
        "fallbacks": stats.get("fallbacks", 0),
    }


def _metric(task_results: dict, filter_name: str | None, stderr: bool = False) -> float | None:
    if filter_name is None:
        return None
    metric = "exact_match_stderr" if stderr else "exact_match"
    value = task_results.get(f"{metric},{filter_name}")
    if value is None:  # a task scored by another metric: take the first one of this filter
        for key, v in task_results.items():
            name, _, filt = key.partition(",")
            if filt == filter_name and name.endswith("_stderr") == stderr:
                value = v
                break
    return float(value) if isinstance(value, (int, float)) else None


def _sample_context(sample: dict) -> str | None:
    args = sample.get("arguments")
    if isinstance(args, dict) and args:
        first = next(iter(args.values()))
        if isinstance(first, dict):
            return first.get("arg_0")
    if isinstance(args, (list, tuple)) and args and isinstance(args[0], (list, tuple)):
        return args[0][0]
    return None


def _sample_responses(sample: dict) -> list[str]:
    out: list[str] = []
    for r in sample.get("resps", []):
        if isinstance(r, str):
            out.append(r)
        elif isinstance(r, (list, tuple)):
            out.extend(x for x in r if isinstance(x, str))
    return out


def _config_without_paths(config: dict) -> dict:
    """lm-eval's config section with the absolute model path it records cut to the folder
    name and the cache prefix made relative to the results folder."""
    config = dict(config)
    for key in ("model", "pretrained"):
        if isinstance(config.get(key), str) and os.path.isabs(config[key]):
            config[key] = Path(config[key]).name
    if isinstance(config.get("use_cache"), str):
        config["use_cache"] = f"cells/{Path(config['use_cache']).name}"
    return config


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- report ------------------------------------------------------------------------------------

COLUMNS = ("task", "strategy", "accuracy strict", "accuracy flexible",
           "generated tokens/q", "prefill tokens/q", "wall s/q", "n")


def sort_cells(cells: list[dict[str, Any]], tasks: list[str] | None = None
               ) -> list[dict[str, Any]]:
    tasks = tasks or []

    def key(c: dict[str, Any]) -> tuple:
        t, s = c["task"], c["strategy"]
        return (tasks.index(t) if t in tasks else len(tasks), t,
                ORDER.index(s) if s in ORDER else len(ORDER), s)

    return sorted(cells, key=key)


Curves = dict[str, tuple[str, str, list[Any]]]  # task -> (strategy, label, maj@k points)


def maj_curves(out: Path, cells: list[dict[str, Any]]) -> Curves:
    """Self-consistency's maj@k curve per task, for the sc cells with a digest or the trace
    and samples to build one (``curves.cell_curve``) and the hf_sc cell whose samples the
    folder holds (``curves.hf_sc_curve``)."""
    from lm_eval_softreason import digest
    from lm_eval_softreason.curves import cell_curve, hf_sc_curve
    from lm_eval_softreason.rescore import read_jsonl

    found: Curves = {}
    for c in cells:
        task, strategy = c["task"], c["strategy"]
        paths = cell_paths(out, task, strategy)
        label = c.get("label", strategy)
        if strategy == "sc" and (digest.path_of(out, task, strategy).exists()
                                 or paths["trace"].exists() and paths["samples"].exists()):
            found[task] = (strategy, label, cell_curve(out, task, strategy))
        elif strategy == HF_SC_STRATEGY and paths["samples"].exists() and c.get("repeats"):
            per_response = c["tokens_generated_per_q"] / c["repeats"]
            found[task] = (strategy, label,
                           hf_sc_curve(task, read_jsonl(paths["samples"]), per_response))
    return found


def cells_table(cells: list[dict[str, Any]], curves: Curves | None = None) -> str:
    """The results table (``table.md``): one row per cell (an sc or hf_sc cell followed by its
    maj@k rows: accuracy ± stderr at the expected tokens of k samples), then a warning per
    cell with fallbacks."""
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    def num(v: float | None, digits: int) -> str:
        return "–" if v is None else f"{v:,.{digits}f}"

    rows = []
    for c in cells:
        n = "–" if c.get("n") is None else str(c["n"])
        rows.append([c["task"], c.get("label", c["strategy"]), pct(c.get("accuracy_strict")),
                     pct(c.get("accuracy_flexible")), num(c.get("tokens_generated_per_q"), 1),
                     num(c.get("tokens_prefilled_per_q"), 1), num(c.get("wall_time_per_q_s"), 2),
                     n])
        strategy, _, points = (curves or {}).get(c["task"], (None, None, []))
        if c["strategy"] == strategy:
            rows.extend([c["task"], f"{strategy} maj@{p.k}", "–",
                         f"{pct(p.accuracy)} ± {pct(p.stderr)}", num(p.tokens, 1), "–", "–", n]
                        for p in points)
    table = render_table(COLUMNS, rows, numeric=range(2, len(COLUMNS)), align=False)
    return "\n".join([table, *fallback_notes(cells)]) + "\n"


def fallback_notes(cells: list[dict[str, Any]]) -> list[str]:
    """Lines under the table for cells where questions fell back to greedy: their rows do not
    measure the strategy alone (e.g. the verifier ran out of GPU memory), so say so."""
    notes = []
    for c in cells:
        if c.get("fallbacks"):
            reasons = c.get("stats", {}).get("fallback_reasons") or {}
            why = ", ".join(f"{k}: {v}" for k, v in reasons.items()) or "reason not recorded"
            notes.append(f"\n**Warning**: {c['task']} / {c.get('label', c['strategy'])}: "
                         f"{c['fallbacks']} of {c.get('questions', c.get('n'))} questions fell "
                         f"back to greedy ({why}); that row is not the strategy's own result.")
    return notes


def plot(cells: list[dict[str, Any]], path: Path, curves: Curves | None = None) -> bool:
    """Write :func:`figure` to ``path`` (atomically); False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; no plot written (pip install matplotlib)",
              file=sys.stderr)
        return False
    fig = figure(cells, curves)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return True


def strategy_colors(cells: list[dict[str, Any]]) -> dict[str, str]:
    """One matplotlib colour per strategy, the same in every panel (first seen, first colour)."""
    strategies = dict.fromkeys(c["strategy"] for c in cells)
    return {s: f"C{i % 10}" for i, s in enumerate(strategies)}


def figure(cells: list[dict[str, Any]], curves: Curves | None = None) -> Any:
    """Accuracy (flexible; strict where a task has none) vs generated tokens/question.

    One panel per task; each strategy a point with ±1 stderr bars, in its own colour in every
    panel; self-consistency's maj@k curve with its stderr band (in its cell's colour) where
    ``curves`` has one. Names go in each panel's legend, so they never overlap.
    """
    import matplotlib.pyplot as plt

    from lm_eval_softreason.curves import draw_curve

    def accuracy(c: dict[str, Any]) -> tuple[float, float]:
        kind = "flexible" if c.get("accuracy_flexible") is not None else "strict"
        return 100 * c[f"accuracy_{kind}"], 100 * (c.get(f"stderr_{kind}") or 0.0)

    shown = [c for c in cells if c.get("tokens_generated_per_q") is not None
             and (c.get("accuracy_flexible") is not None
                  or c.get("accuracy_strict") is not None)]
    colors = strategy_colors(shown)
    tasks = list(dict.fromkeys(c["task"] for c in shown)) or ["(no cells)"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        xs: list[float] = []
        ys: list[float] = []
        for c in (c for c in shown if c["task"] == task):
            y, se = accuracy(c)
            ax.errorbar([c["tokens_generated_per_q"]], [y], yerr=[se], fmt="o", markersize=6,
                        capsize=3, color=colors[c["strategy"]],
                        label=c.get("label", c["strategy"]), zorder=4)
            xs.append(c["tokens_generated_per_q"])
            ys += [y - se, y + se]
        if task in (curves or {}):
            strategy, label, curve = curves[task]
            draw_curve(ax, curve, colors.get(strategy, "0.5"), f"{label} maj@k")
            xs += [p.tokens for p in curve]
            ys += [100 * (p.accuracy + d * p.stderr) for p in curve for d in (-1, 1)]
        positive = [x for x in xs if x > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("log")
        if ys:
            ax.set_ylim(max(0.0, min(ys) - 3), min(100.0, max(ys) + 3))
            ax.margins(x=0.1)
            ax.legend(fontsize=7, loc="best")
        ax.set_title(task)
        ax.set_xlabel("generated tokens / question (verifier included)")
        ax.set_ylabel("accuracy, flexible-extract (%)")
        ax.grid(True, alpha=0.3, zorder=0)
    fig.tight_layout()
    return fig


def report(out: Path, tasks: list[str] | None = None) -> str:
    """Write table.md and the plot from the folder's cells, after writing the digest of any
    cell finished before digests were kept whose samples are still there."""
    from lm_eval_softreason import digest

    cells = sort_cells(load_cells(out), tasks)
    for c in cells:
        task, strategy = c["task"], c["strategy"]
        if not digest.path_of(out, task, strategy).exists() \
                and cell_paths(out, task, strategy)["samples"].exists():
            write_digest(out, task, strategy)
    curves = maj_curves(out, cells)
    table = cells_table(cells, curves)
    write_atomic(out / "table.md", table)
    print(table, end="", flush=True)
    if cells:
        plot(cells, out / "accuracy_vs_tokens.png", curves)
    return table


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    tasks = _split_list(args.tasks)
    if args.report_only:
        report(out, tasks)
        return 0
    if not args.model:
        raise SystemExit("--model is required (except with --report-only)")
    strategies = _split_list(args.strategies)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategy {', '.join(unknown)}; known: {', '.join(STRATEGIES)}")
    if args.sc_n is not None and args.sc_n < 1:
        raise SystemExit("--sc-n must be >= 1")
    matchable = [s for s in STRATEGIES if s not in (BUDGET_STRATEGY, BUDGET_UNIT)]
    if args.sc_match not in matchable:
        raise SystemExit(f"--sc-match {args.sc_match!r} is not a strategy sc can be matched to; "
                         f"allowed: {', '.join(matchable)}")
    if args.hf_sc_repeats is not None and args.hf_sc_repeats < 1:
        raise SystemExit("--hf-sc-repeats must be >= 1")

    import torch

    # No autoload.install(): cells get an LM object and a TaskManager that includes our tasks
    # folder, so nothing global (model registry, TaskManager defaults) needs patching.
    st = RunSettings(
        model=args.model, limits=parse_limits(args.limit, tasks), seed=args.seed,
        apply_chat_template=args.apply_chat_template, batch_size=args.batch_size,
        dtype=args.dtype, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        extra_model_args=parse_kv(args.extra_model_args), gen_kwargs=parse_kv(args.gen_kwargs),
        sc_temperature=args.sc_temperature, sc_n=args.sc_n, hf_sc_repeats=args.hf_sc_repeats,
        engine=args.engine, sc_match=args.sc_match,
    )
    _check_extra_args(st, strategies)
    plan = plan_cells(tasks, strategies, args.baseline_hf_sc, st.sc_match)

    # Everything that can fail without the model is checked before it is loaded.
    todo = []
    for task, strategy in plan:
        cell = read_cell(cell_paths(out, task, strategy)["cell"])
        if cell is not None:
            diff = check_spec(cell, st.spec(task, strategy))
            if diff:
                raise SystemExit(
                    f"{cell_stem(task, strategy)} in {out} was run with other settings ("
                    + "; ".join(diff) + "); use another --out or delete that cell")
            continue
        todo.append((task, strategy))
    if BUDGET_STRATEGY in strategies and st.sc_n is None:
        for task in tasks:
            missing = [s for s in (BUDGET_UNIT, st.sc_match) if s not in strategies
                       and read_cell(cell_paths(out, task, s)["cell"]) is None]
            if missing:
                raise SystemExit(
                    f"sc's sample budget is matched to {st.sc_match}/greedy on the same task, but "
                    f"{', '.join(missing)} is neither in --strategies nor finished in {out} for "
                    f"{task}; add it or pass --sc-n")

    runner = Runner(st, out)
    for task, strategy in plan:
        if (task, strategy) not in todo:
            print(f"skip {task} / {strategy}: finished cell in {out / 'cells'}", flush=True)
            continue
        print(f"run {task} / {strategy}", flush=True)
        cell = runner.run_cell(task, strategy)
        print(f"done {task} / {cell.get('label', strategy)}: strict={cell['accuracy_strict']} "
              f"flexible={cell['accuracy_flexible']} "
              f"tokens/q={cell['tokens_generated_per_q']}", flush=True)
        for note in fallback_notes([cell]):
            print(note.strip(), file=sys.stderr, flush=True)
    report(out, tasks)
    return 0


def _check_extra_args(st: RunSettings, strategies: list[str]) -> None:
    """Validate every cell's model_args now (a typo costs a second, not a model load)."""
    from lm_eval_softreason.config import ConfigError, SoftReasonConfig

    reserved = sorted(set(st.extra_model_args) & {"pretrained", "dtype", "device", "batch_size",
                                                  "trace_path", "tokenizer"})
    if reserved:
        raise SystemExit(f"--extra-model-args may not set {', '.join(reserved)}: use the "
                         "dedicated option (trace_path and tokenizer are set per cell)")
    for strategy in strategies:
        args = strategy_model_args(strategy, st)
        overridden = sorted(k for k, v in st.extra_model_args.items() if args[k] != v)
        if strategy == BUDGET_STRATEGY and "n_samples" in st.extra_model_args:
            overridden.append("n_samples (budget-matched, or --sc-n)")
        if overridden:
            print(f"note: {strategy} sets {', '.join(overridden)} itself; "
                  f"--extra-model-args value ignored there", file=sys.stderr)
        try:
            SoftReasonConfig.from_kwargs(args)
        except ConfigError as exc:
            raise SystemExit(f"strategy {strategy}: {exc}") from None
