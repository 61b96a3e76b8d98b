#!/usr/bin/env python
"""Peak memory of ``generate_until`` against the number of questions: the window at work.

Each cell runs in a fresh process: load the model, then one ``generate_until`` call over N
distinct long prompts, with the peak resident memory of that call measured by the kernel's
high-water mark (``_common.PeakRSS``). Side by side in one run:

- the tiny test model, 20 vs 200 questions of ~800 tokens, ``mode=greedy``, with the default
  window (``max_active=auto``) and with every question in flight at once (``max_active=N``,
  what the runner did before it had a window);
- Qwen-0.5B (``--model DIR``), 10 vs 60 questions of ~400 tokens, ``mode=greedy`` with 16 new
  tokens (the cheapest configuration: a softreason search costs ~50 s per question here, and
  the window holds prompt states the same way for every mode), default window (add
  ``--all-in-flight`` for the contrast cells too: they double the run time).

Goal: with the window, the larger run's peak is within 10 % of the smaller run's. Each cell is
saved to ``--json`` as it finishes, and a rerun with the same file skips finished cells.

    python benchmarks/bench_memory.py [--model DIR] [--quick] [--all-in-flight] [--json OUT]

``--quick`` runs the tiny model only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import _common as C

# ~800-token few-shot preamble (gsm8k-cot style), so a prompt's state is worth measuring.
EXEMPLAR = ("Q: There are 15 trees in the grove. Grove workers will plant trees today. After "
            "they are done, there will be 21 trees. How many trees did they plant today?\n"
            "A: There are 15 trees originally. Then there were 21 trees after some more were "
            "planted. So there must have been 21 - 15 = 6. The answer is 6.\n\n")
GOAL = 1.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="Qwen-0.5B folder (../shared/assets/get-model qwen0.5b DIR)")
    p.add_argument("--quick", action="store_true", help="tiny model only")
    p.add_argument("--json", help="write the measurements here (and resume from them)")
    p.add_argument("--all-in-flight", action="store_true",
                   help="also run Qwen with every question in flight")
    p.add_argument("--worker", nargs=5, metavar=("MODEL", "N", "MAX_ACTIVE", "KIND", "OUT"),
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def prompts(n: int, tokenizer, tokens: int) -> list[str]:  # type: ignore[no-untyped-def]
    """``n`` distinct prompts of about ``tokens`` tokens of this tokenizer."""
    preamble = EXEMPLAR
    while len(tokenizer.encode(preamble)) < tokens - 20:
        preamble += EXEMPLAR
    return [f"{preamble}Q: Tom has {i} apples and buys {i % 7 + 2} more. How many apples does "
            f"he have now?\nA:" for i in range(n)]


def worker(model: str, n: int, max_active: str, kind: str, out: str) -> None:
    """One cell, in its own process: load, one generate_until over n prompts, peak RSS."""
    from lm_eval.api.instance import Instance

    from lm_eval_softreason.harness.hf_model import SoftReasonLM

    settings = {"mode": "greedy"}
    lm = SoftReasonLM(pretrained=model, device="cpu", dtype="float32", batch_size=8,
                      max_active=max_active, **settings)
    gen = {"until": ["Q:"], "do_sample": False, "max_gen_toks": 16}
    reqs = [Instance("generate_until", {}, (p, gen), idx=0, metadata=("bench", i, 1))
            for i, p in enumerate(prompts(n, lm.tokenizer, 800 if kind == "tiny" else 400))]
    started = C.now()
    with C.PeakRSS() as mem:
        lm.generate_until(reqs, disable_tqdm=True)
    with open(out, "w") as fh:
        json.dump({"peak_mb": mem.peak_mb, "start_mb": mem.start_mb, "method": mem.method,
                   "seconds": C.now() - started, "max_active_used": lm._max_active(),
                   "prompt_tokens": len(lm.tok_encode(reqs[0].args[0]))}, fh)


def cell(model: str, n: int, max_active: str, kind: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--worker", model, str(n), max_active, kind, out.name]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{done.stderr[-3000:]}")
        return json.load(open(out.name))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    C.set_offline_env()
    if args.worker:
        model, n, max_active, kind, out = args.worker
        worker(model, int(n), max_active, kind, out)
        return 0
    plans = [("tiny", None, (20, 200), ("auto", "all"))]
    if not args.quick:
        if not args.model:
            raise SystemExit("--model DIR (Qwen-0.5B) is needed unless --quick")
        plans.append(("qwen0.5b", args.model, (10, 60),
                      ("auto", "all") if args.all_in_flight else ("auto",)))
    done: dict = {}
    if args.json and os.path.exists(args.json):
        done = json.load(open(args.json)).get("cells", {})
    rows = []
    with C.model_dir(None) as (tiny, _):
        for kind, path, (small, large), windows in plans:
            model = tiny if path is None else path
            for window in windows:
                got = {}
                for n in (small, large):
                    key = f"{kind}/{window}/{n}"
                    if key not in done:
                        done[key] = cell(model, n, "auto" if window == "auto" else str(n), kind)
                        if args.json:
                            with open(args.json, "w") as fh:
                                json.dump({"machine": C.machine_info(), "cells": done}, fh,
                                          indent=1)
                    got[n] = done[key]
                ratio = got[large]["peak_mb"] / got[small]["peak_mb"]
                verdict = ("met" if ratio <= GOAL else "NOT met") if window == "auto" else "-"
                rows.append([kind, window, f"{got[small]['max_active_used']} / "
                             f"{got[large]['max_active_used']}",
                             str(got[small]["prompt_tokens"]),
                             f"{got[small]['peak_mb']:.0f} ({small} q)",
                             f"{got[large]['peak_mb']:.0f} ({large} q)",
                             f"{ratio:.3f}", verdict])
    print(C.md_table(["model", "window", "questions in flight", "prompt tokens",
                      "peak RSS MiB, smaller run", "peak RSS MiB, larger run",
                      "larger / smaller", f"goal <= {GOAL:.2f}"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
