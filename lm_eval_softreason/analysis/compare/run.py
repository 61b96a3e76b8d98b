"""Running compare's cells: one in-process lm-eval run each, resumable inside a cell."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import time
from pathlib import Path
from typing import Any

from lm_eval_softreason.analysis.artifacts import request_args
from lm_eval_softreason.analysis.compare.cell import (config_without_paths, jsonable, metric,
                                                      per_question, sample_responses,
                                                      trace_stats)
from lm_eval_softreason.analysis.compare.plan import (BUDGET_STRATEGY, HF_DEFAULT_BATCH,
                                                      HF_SC_STRATEGY, HF_SC_TASK, RunSettings,
                                                      budget_samples, check_spec, hf_args,
                                                      hf_sc_config, model_name, softreason_args,
                                                      strategy_model_args)
from lm_eval_softreason.analysis.folders import (cell_paths, read_json_object, remove_cache,
                                                 write_atomic)
from lm_eval_softreason.settings import CELL_SCHEMA, cell_stem
from lm_eval_softreason.strategies.fallback import PROMPT_NOT_RUN
from lm_eval_softreason.trace import read_trace


# A question whose prompt could not be run has no trace record and is never streamed to the
# cache, so a resumed cell finds every such question in its last attempt's stats.
UNTRACED_FALLBACK = PROMPT_NOT_RUN.stage


class CellRunner:
    """Loads the model once and evaluates cells with it."""

    def __init__(self, st: RunSettings, out: Path) -> None:
        self.st = st
        self.out = out
        self._base = None
        self._softreason = None

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
        if self._softreason is None and self.st.engine == "server":
            from lm_eval_softreason.harness.server_model import SoftReasonServer

            self._softreason = SoftReasonServer(
                base_url=self.st.base_url, pretrained=self.st.model, dtype=self.st.dtype,
                **hf_args(self.st.extra_model_args))
        if self._softreason is None and self.st.engine == "vllm":
            from lm_eval_softreason.harness.vllm_model import SoftReasonVLLM

            started = time.perf_counter()
            self._softreason = SoftReasonVLLM(
                pretrained=self.st.model, dtype=self.st.dtype, batch_size=self.st.batch_size,
                **hf_args(self.st.extra_model_args))
            print(f"started vLLM on {self.st.model} in {time.perf_counter() - started:.1f}s",
                  flush=True)
        if self._softreason is None:
            from lm_eval_softreason.harness.hf_model import SoftReasonLM

            self._softreason = SoftReasonLM(
                pretrained=self.base.model, tokenizer=self.base.tokenizer,
                batch_size=self.st.batch_size, **hf_args(self.st.extra_model_args))
        return self._softreason

    def task_manager(self, tasks: list[str]):  # type: ignore[no-untyped-def]
        """Our tasks folder only (instant); the full lm-eval index (~13 s) only if needed."""
        from lm_eval_softreason.tasks_path import task_manager

        return task_manager(tasks)

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
            context = request_args(s)[0]
            n_ctx = len(base.tok_encode(context)) if context else 0
            for text in sample_responses(s):
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
            "spec": jsonable(self.st.spec(task, strategy)),
            "accuracy_strict": metric(task_results, strict_filter),
            "accuracy_flexible": metric(task_results, flexible_filter),
            "stderr_strict": metric(task_results, strict_filter, stderr=True),
            "stderr_flexible": metric(task_results, flexible_filter, stderr=True),
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
            "lm_eval_config": jsonable(config_without_paths(results.get("config", {}))),
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
    from lm_eval_softreason.analysis import digest

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


def close_cache(lm: Any) -> None:
    """Close the cell's cache database and unhook it from the shared model, which the next
    cell hooks to its own."""
    from lm_eval.api.model import CacheHook

    if lm.cache_hook.dbdict is not None:
        lm.cache_hook.dbdict.close()
    lm.set_cache_hook(CacheHook(None))
