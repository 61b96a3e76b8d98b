#!/usr/bin/env python
"""Cost of one BO step (``lm_eval_softreason.strategies.softreason.bayesopt.propose``) and what cheaper variants give up.

Softreason calls ``propose`` once per question and BO round, serially between decode rounds,
so its time adds directly to the wall time. This times it on synthetic data shaped like a real
search (``--points`` observed points in ``--dim`` dimensions, rewards = verifier 0/1 + a
coherence term in (0, 1), ``q`` = 5 proposals) for:

  * ``current``: the package as it is (``propose`` switches torch to one thread itself when
    the package has ``bayesopt._single_thread``);
  * ``all threads``: the same with that guard replaced by a no-op, so the GP maths runs on
    the process's torch thread count (tiny matrices, where OpenMP fork/join can cost more
    than it saves, especially when another process holds a core);
  * cheaper acquisition optimisation (fewer restarts / raw samples / L-BFGS iterations),
    by overriding the module constants ``NUM_RESTARTS``, ``RAW_SAMPLES``, ``MAXITER``.

Variants are interleaved over ``--repeats`` different synthetic problems; for each, the table
gives the median time and the expected improvement it found relative to ``current`` on the
same problem (1.00 = as good; the acquisition optimum is what the proposals are chosen by).

Usage::

    python benchmarks/bench_bayesopt.py [--repeats 5] [--points 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import _common as C

VARIANTS = {
    # name: (all threads?, NUM_RESTARTS, RAW_SAMPLES, MAXITER); None = package value
    "current": (False, None, None, None),
    "all threads": (True, None, None, None),
    "maxiter 30": (False, None, None, 30),
    "2 restarts, 64 raw": (False, 2, 64, None),
    "2 restarts, 64 raw, maxiter 30": (False, 2, 64, 30),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--points", type=int, default=5, help="observed points (n_init=5: 5)")
    p.add_argument("--dim", type=int, default=50, help="search dimension (proj_dim)")
    p.add_argument("--q", type=int, default=5, help="proposals per round (batch)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    from lm_eval_softreason.strategies.softreason import bayesopt

    defaults = (torch.get_num_threads(), bayesopt.NUM_RESTARTS, bayesopt.RAW_SAMPLES,
                bayesopt.MAXITER)
    guard = getattr(bayesopt, "_single_thread", None)
    bounds = torch.tensor([[-3.0] * args.dim, [3.0] * args.dim])
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    rel_ei: dict[str, list[float]] = {k: [] for k in VARIANTS}
    bayesopt.propose(torch.randn(args.points, args.dim), torch.rand(args.points), bounds,
                     args.q, seed=0)  # warm-up: imports, first-call costs
    for rep in range(args.repeats):
        g = torch.Generator().manual_seed(rep)
        x = torch.randn(args.points, args.dim, generator=g).clamp(-3, 3)
        y = (torch.rand(args.points, generator=g) < 0.5).float() + \
            0.3 + 0.4 * torch.rand(args.points, generator=g)
        names = list(VARIANTS) if rep % 2 == 0 else list(VARIANTS)[::-1]
        ei = {}
        for name in names:
            all_threads, restarts, raw, maxiter = VARIANTS[name]
            if guard is not None:
                bayesopt._single_thread = contextlib.nullcontext if all_threads else guard
            bayesopt.NUM_RESTARTS = restarts or defaults[1]
            bayesopt.RAW_SAMPLES = raw or defaults[2]
            bayesopt.MAXITER = maxiter or defaults[3]
            t = time.perf_counter()
            out = bayesopt.propose(x, y, bounds, args.q, seed=100 + rep)
            times[name].append(time.perf_counter() - t)
            ei[name] = out.expected_improvement
        for name in VARIANTS:
            rel_ei[name].append(ei[name] / ei["current"] if ei["current"] > 0 else float("nan"))
        if guard is not None:
            bayesopt._single_thread = guard
        (bayesopt.NUM_RESTARTS, bayesopt.RAW_SAMPLES, bayesopt.MAXITER) = defaults[1:]

    m = C.machine_info()
    print(f"machine: {C.cpu_model()}, {m['usable_cores']} usable cores, torch {m['torch']}, "
          f"default threads {defaults[0]}, OMP_WAIT_POLICY {m['omp_wait_policy']}, load avg "
          f"{m['load_avg_at_start']} / end {[round(v, 2) for v in os.getloadavg()]}; "
          f"{args.points} points, d={args.dim}, q={args.q}; package constants NUM_RESTARTS="
          f"{defaults[1]}, RAW_SAMPLES={defaults[2]}, MAXITER={defaults[3]}, one-thread guard "
          f"{'present' if guard is not None else 'absent'}; median of "
          f"{args.repeats} interleaved problems")
    base = C.median(times["current"])
    rows = [[name, f"{C.median(times[name]):.2f}", f"{base / C.median(times[name]):.1f}x",
             f"{C.median(rel_ei[name]):.2f} (min {min(rel_ei[name]):.2f})"]
            for name in VARIANTS]
    print()
    print(C.md_table(["propose() variant", "s per call", "speed-up", "EI found vs current"],
                     rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": m, "args": vars(args), "times": times, "rel_ei": rel_ei}, fh,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
