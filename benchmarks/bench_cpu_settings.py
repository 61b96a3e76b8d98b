#!/usr/bin/env python
"""Which CPU settings make our batched decoding fastest on this machine?

Measures decode throughput (generated tokens/s) of ``lm_eval_softreason.engines.hf.BatchDecoder``
(prompt prefilled once, N rows with perturbed ``first_embed``, EOS ignored so every row runs
exactly ``--max-new-tokens``) for every combination of

  * dtype: bfloat16 vs float32 (both copies loaded once per process),
  * ``torch.set_num_threads``: 1, 2 (switched at run time),
  * ``OMP_WAIT_POLICY``: PASSIVE, ACTIVE, unset (read by OpenMP at start-up, so one child
    process per policy),
  * batch size (rows): 1, 8, 32,

plus prompt prefill throughput of a verifier-sized prompt for each dtype/threads.

Settings are interleaved as closely as possible (within a child: for each batch size, every
dtype/threads pair back to back; children alternate policies over ``--repeats`` rounds) and the
median over repeats is reported, so background load hits every setting alike.

Usage::

    python benchmarks/bench_cpu_settings.py --model DIR [--repeats 2] [--json out.json]
    python benchmarks/bench_cpu_settings.py --quick          # tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections import defaultdict

import _common as C

C.set_offline_env()
POLICIES = ("PASSIVE", "ACTIVE", "unset")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="HF model folder (default: the tests' tiny random model in a temp dir)")
    p.add_argument("--quick", action="store_true", help="tiny model, batches 1,8, 8 tokens")
    p.add_argument("--batches", default=None, help="comma-separated rows (default 1,8,32)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--policies", default=",".join(POLICIES),
                   help="OMP_WAIT_POLICY values; 'unset' runs without the variable")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 32; quick 8")
    p.add_argument("--prefill-tokens", type=int, default=None,
                   help="prompt length for the prefill figure (default 300; quick 100)")
    p.add_argument("--budget-s", type=float, default=10.0,
                   help="time cap per decode measurement; slower settings stop early (their "
                        "rate is still exact: rows x completed steps / time)")
    p.add_argument("--repeats", type=int, default=None, help="rounds over policies (default 2)")
    p.add_argument("--json", default=None, help="write all measurements to this JSON file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # model dir, in a child
    args = p.parse_args(argv)
    args.batches = args.batches or ("1,8" if args.quick else "1,8,32")
    args.max_new_tokens = args.max_new_tokens or (8 if args.quick else 32)
    args.prefill_tokens = args.prefill_tokens or (100 if args.quick else 300)
    args.repeats = args.repeats or (1 if args.quick else 2)
    if args.quick:
        args.model = None
    return args


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


# --- child: one OMP_WAIT_POLICY, every other setting ---------------------------------------


def child(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_eval_softreason.strategies.config import SoftReasonConfig
    from lm_eval_softreason.engines.base import DecodeRow
    from lm_eval_softreason.engines.hf import BatchDecoder, prefill
    from lm_eval_softreason.strategies.softreason.perturbation import EmbeddingSpace

    tok = AutoTokenizer.from_pretrained(args.child)
    models = {d: AutoModelForCausalLM.from_pretrained(args.child, dtype=C.torch_dtype(d)).eval()
              for d in args.dtypes.split(",")}
    cfg = SoftReasonConfig()
    prompt = C.PROMPT.format(question=C.BUILTIN_QUESTIONS[0])
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    filler = tok(" ".join(C.BUILTIN_QUESTIONS), add_special_tokens=False)["input_ids"]
    long_ids = (filler * (args.prefill_tokens // len(filler) + 1))[:args.prefill_tokens]

    def decode_rate(model, n: int, max_new: int) -> float:  # type: ignore[no-untyped-def]
        """Rows/s x forward steps: every decode step emits one token per row. A step that
        starts after ``--budget-s`` aborts the decode, so a slow setting costs bounded time."""
        state = prefill(model, ids)
        table = model.get_input_embeddings().weight.detach()
        std = float(table.float().std(dim=0).mean())
        space = EmbeddingSpace(table[state.greedy_token], cfg,
                               torch.Generator().manual_seed(n), std)
        rows = [DecodeRow(state, first_token=state.greedy_token, first_embed=space.to_vector(u))
                for u in space.initial_points(n)]
        decoder = BatchDecoder(model, tok, eos_token_ids=[], max_batch=n)
        steps = 0
        forward = model.forward
        t = time.perf_counter()
        deadline = t + args.budget_s

        def counted(*a, **kw):  # type: ignore[no-untyped-def]
            nonlocal steps
            if time.perf_counter() > deadline and steps >= 2:
                raise OverBudget
            out = forward(*a, **kw)
            steps += 1
            return out

        model.forward = counted
        try:
            decoder.decode(rows, [], max_new)
        except OverBudget:
            pass
        finally:
            del model.forward  # back to the class's method
        return n * steps / (time.perf_counter() - t)

    def prefill_rate(model) -> float:  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        prefill(model, long_ids)
        return len(long_ids) / (time.perf_counter() - t)

    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    for dtype, model in models.items():  # warm-up: allocator, kernels
        for th in ints(args.threads):
            torch.set_num_threads(th)
            decode_rate(model, 2, 2)
    for dtype, model in models.items():
        for th in ints(args.threads):
            torch.set_num_threads(th)
            emit(policy=policy, dtype=dtype, threads=th, kind="prefill",
                 tok_per_s=prefill_rate(model))
    for n in ints(args.batches):
        for dtype, model in models.items():
            for th in ints(args.threads):
                torch.set_num_threads(th)
                emit(policy=policy, dtype=dtype, threads=th, kind="decode", batch=n,
                     tok_per_s=decode_rate(model, n, args.max_new_tokens))
    emit(kind="info", parallel_info=torch.__config__.parallel_info(),
         load_avg=[round(x, 2) for x in os.getloadavg()])


class OverBudget(Exception):
    """Raised inside a decode that ran past its time budget."""


def emit(**record: object) -> None:
    print("RESULT " + json.dumps(record), flush=True)


# --- parent ----------------------------------------------------------------------------------


def run_child(path: str, policy: str, args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, os.path.abspath(__file__), "--child", path,
           "--batches", args.batches, "--threads", args.threads, "--dtypes", args.dtypes,
           "--max-new-tokens", str(args.max_new_tokens),
           "--prefill-tokens", str(args.prefill_tokens), "--budget-s", str(args.budget_s)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"child for OMP_WAIT_POLICY={policy} failed ({out.returncode})")
    return [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    policies = args.policies.split(",")
    started = time.perf_counter()
    records: list[dict] = []
    info = ""
    loads: list[dict] = []
    with C.model_dir(args.model) as (path, label):
        for rep in range(args.repeats):
            order = policies if rep % 2 == 0 else policies[::-1]
            for policy in order:
                t = time.perf_counter()
                got = run_child(path, policy, args)
                for r in got:
                    r["repeat"] = rep
                meta = next((r for r in got if r["kind"] == "info"), {})
                info = meta.get("parallel_info", info)
                loads.append({"repeat": rep, "policy": policy, "load_avg": meta.get("load_avg"),
                              "wall_s": round(time.perf_counter() - t, 1)})
                records += [r for r in got if r["kind"] != "info"]
                print(f"# repeat {rep} OMP_WAIT_POLICY={policy}: {time.perf_counter() - t:.0f} s, "
                      f"load avg after {meta.get('load_avg')}", file=sys.stderr)

    rates: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        rates[(r["kind"], r["policy"], r["dtype"], r["threads"], r.get("batch"))].append(
            r["tok_per_s"])
    med = {k: C.median(v) for k, v in rates.items()}
    batches, threads, dtypes = ints(args.batches), ints(args.threads), args.dtypes.split(",")
    settings = [(p, d, t) for d in dtypes for t in threads for p in policies]

    def geo(values: list[float]) -> float:
        prod = 1.0
        for v in values:
            prod *= v
        return prod ** (1 / len(values))

    rows, score = [], {}
    for p, d, t in settings:
        dec = [med[("decode", p, d, t, b)] for b in batches]
        score[(p, d, t)] = geo(dec)
        rows.append([f"{d}, {t} thread{'s' if t > 1 else ''}, OMP_WAIT_POLICY={p}"]
                    + [f"{v:.1f}" for v in dec] + [f"{score[(p, d, t)]:.1f}",
                                                   f"{med[('prefill', p, d, t, None)]:.0f}"])
    header = (["setting"] + [f"decode tok/s, batch {b}" for b in batches]
              + ["geo. mean", f"prefill tok/s ({args.prefill_tokens}-token prompt)"])
    machine = C.machine_info()
    print(f"machine: {C.cpu_model()}, {machine['usable_cores']} usable cores, "
          f"{machine['ram_gb']} GB RAM, torch {machine['torch']}, transformers "
          f"{machine['transformers']}, load avg at start {machine['load_avg_at_start']} / end "
          f"{[round(x, 2) for x in os.getloadavg()]}")
    print(f"model: {label}; {args.max_new_tokens} new tokens per row; median of "
          f"{args.repeats} repeat(s); OpenMP: "
          + "; ".join(line.strip() for line in info.splitlines()
                      if "OpenMP" in line or "MKL" in line or "threads" in line.lower())[:300])
    print()
    print(C.md_table(header, rows))
    print()
    best_rows = []
    for b in batches:
        best = max(settings, key=lambda s: med[("decode", *s, b)])
        base = med[("decode", "unset", "float32", max(threads), b)] \
            if ("decode", "unset", "float32", max(threads), b) in med else None
        best_rows.append([f"batch {b}", f"{best[1]}, {best[2]} threads, {best[0]}",
                          f"{med[('decode', *best, b)]:.1f}",
                          f"{med[('decode', *best, b)] / base:.2f}x" if base else "-"])
    overall = max(settings, key=lambda s: score[s])
    default = score.get(("unset", "float32", max(threads)))
    best_rows.append(["all (geo. mean)", f"{overall[1]}, {overall[2]} threads, {overall[0]}",
                      f"{score[overall]:.1f}",
                      f"{score[overall] / default:.2f}x" if default else "-"])
    print(C.md_table(["best for", "setting", "decode tok/s",
                      f"vs float32, {max(threads)} threads, policy unset"], best_rows))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "model": label, "args": vars(args),
                       "records": records, "children": loads, "parallel_info": info}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
