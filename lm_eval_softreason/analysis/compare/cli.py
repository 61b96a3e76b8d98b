"""``lm-eval-softreason compare``: its command line, and the run or report it starts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lm_eval_softreason.analysis.compare.plan import (BUDGET_REFERENCE, BUDGET_STRATEGY,
                                                      BUDGET_UNIT, HF_SC_TASK, Limit, RunSettings,
                                                      STRATEGIES, check_spec, plan_cells,
                                                      strategy_model_args)
from lm_eval_softreason.analysis.compare.report import fallback_notes, report
from lm_eval_softreason.analysis.compare.run import CellRunner
from lm_eval_softreason.analysis.folders import cell_paths, read_cell
from lm_eval_softreason.settings import cell_stem


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
    p.add_argument("--engine", choices=("hf", "vllm", "server"), default="hf",
                   help="what decodes the softreason-model cells: hf (--model softreason), "
                        "vllm (--model softreason-vllm; engine args such as enforce_eager=True "
                        "go in --extra-model-args) or server (--model softreason-server against "
                        "--base-url); hf_sc always uses lm-eval's hf model")
    p.add_argument("--base-url", default=None,
                   help="--engine server: the vllm serve endpoint(s), several separated by '|'")
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

    if (args.engine == "server") != (args.base_url is not None):
        raise SystemExit("--base-url goes with --engine server, and --engine server needs it "
                         f"(got --engine {args.engine}, --base-url {args.base_url})")
    import torch

    # No autoload.install(): cells get an LM object and a TaskManager that includes our tasks
    # folder, so nothing global (model registry, TaskManager defaults) needs patching.
    st = RunSettings(
        model=args.model, limits=parse_limits(args.limit, tasks), seed=args.seed,
        apply_chat_template=args.apply_chat_template, batch_size=args.batch_size,
        dtype=args.dtype, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        extra_model_args=parse_kv(args.extra_model_args), gen_kwargs=parse_kv(args.gen_kwargs),
        sc_temperature=args.sc_temperature, sc_n=args.sc_n, hf_sc_repeats=args.hf_sc_repeats,
        engine=args.engine, sc_match=args.sc_match, base_url=args.base_url,
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

    runner = CellRunner(st, out)
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
    from lm_eval_softreason.errors import ConfigError
    from lm_eval_softreason.strategies.config import SoftReasonConfig

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
