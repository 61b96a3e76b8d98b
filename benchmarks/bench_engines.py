#!/usr/bin/env python
"""The HF engine against the vLLM engine, side by side in one run, on the same model and questions.

Every cell runs in a fresh process (start time and peak memory are the process's own), in a
virtualenv that has both engines (``.ci/setup-vllm.sh`` makes one):

- start: seconds to build the model class (HF: load the weights; vLLM: start the engine);
- decode: candidate throughput, ``ROWS`` perturbed rows of one prompt, ``DECODE_TOKENS`` each,
  through ``engine.decode`` (generated tokens per second);
- softreason: wall per question and generated tokens per question over ``--questions`` SVAMP
  problems (chat template, the ``svamp`` task's prompt), the same search settings on both;
- self-consistency at matched generated tokens: ``mode=sample`` with as many samples as
  softreason decoded candidate-tokens' worth per question;
- prefix-cache hit rate (vLLM: prompt tokens its cache served / prompt tokens sent);
- peak resident memory of the process;
- per cell, where the wall goes (the runner's prefill / decode / verify / propose seconds) and
  the prompt tokens the model really ran (vLLM: sent minus served from the prefix cache; HF:
  the runner's own count): on a CPU, prefill is compute like decoding, so softreason's
  verifier prompts cost wall that self-consistency never pays. The verify phase is split
  further into reading the verifier prompts (the engine's ``prefill_many`` calls that continue
  the verifier's shared prefix) and generating the verdicts (its ``decode`` calls).

Goals (issue "Soft Reasoning on vLLM"): softreason on vLLM >= 5x the HF engine's questions per
hour; on vLLM, softreason wall <= 1.3x self-consistency's at matched generated tokens.

``server`` is ``--model softreason-server`` against one ``lm-eval-softreason serve`` process the
cell starts (eager, the offline engine's CPU settings): questions run free; ``server-lockstep``
runs the same rounds in lock-step; ``server-2x1`` runs free against two replicas, each bound
to one core (``VLLM_CPU_OMP_THREADS_BIND``). Their cells add the client process's CPU seconds
per wall second and the bytes sent per question. ``vllm-compiled`` is the vLLM engine without
``enforce_eager`` (torch.compile: a slower start, maybe a faster decode); ``vllm`` is eager, as in the tests and examples. A vLLM engine name may
end in ``:BLOCK``, its KV block size (the prefix cache's unit; vLLM-CPU's default is 128 and
its smallest 32), so ``--engines vllm-compiled,vllm-compiled:32`` compares block sizes.

    python benchmarks/bench_engines.py --model DIR [--questions 3] [--engines hf,vllm]
        [--max-active 8|auto] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import _common as C

ROWS, DECODE_TOKENS = 16, 64
# A cheap search, identical on both engines: 4 + 4 candidates, one BO round.
SEARCH = {"n_init": 4, "batch": 4, "max_rounds": 1, "verifier_max_tokens": 128}
MAX_GEN = 96
ENGINES = ("hf", "vllm", "vllm-compiled", "server", "server-lockstep", "server-2x1")
# The server cells: requests in flight (vLLM's scheduler batches up to 256 sequences a step).
NUM_CONCURRENT = 256
GOAL_SPEEDUP, GOAL_SC_RATIO = 5.0, 1.3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder (e.g. get-model qwen0.5b DIR)")
    p.add_argument("--questions", type=int, default=3)
    p.add_argument("--engines", default="hf,vllm",
                   help="comma-separated, run in this order, of hf, vllm (eager) and "
                        "vllm-compiled, a vLLM one optionally with :BLOCK (default hf,vllm; the "
                        "5x goal needs both)")
    p.add_argument("--max-active", default="8",
                   help="questions in flight: an int or auto (default 8)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--json", help="write the measurements here")
    p.add_argument("--worker", nargs=4, metavar=("ENGINE", "QUESTIONS", "MAX_ACTIVE", "OUT"),
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def parse_engine(spec: str) -> tuple[str, int | None]:
    """``vllm-compiled:32`` -> ("vllm-compiled", 32); one clear error for anything else."""
    name, _, block = spec.partition(":")
    if name not in ENGINES or (block and (name == "hf" or not block.isdigit())):
        raise SystemExit(f"--engines: {spec!r} is not one of {', '.join(ENGINES)}, a vLLM one "
                         "optionally followed by :BLOCK (e.g. vllm-compiled:32)")
    return name, int(block) if block else None


def build(engine: str, model: str, dtype: str, max_active: str,  # type: ignore[no-untyped-def]
          block_size: int | None = None, logs: str | None = None):
    if engine.startswith("server"):
        from lm_eval_softreason.harness.serve import LocalServer
        from lm_eval_softreason.harness.server_model import SoftReasonServer

        flags = ["--dtype", dtype, "--enforce-eager", "--enable-prompt-tokens-details",
                 *(["--block-size", str(block_size)] if block_size else [])]
        cores = ["0", "1"] if engine == "server-2x1" else [None]  # one replica per core
        servers = [LocalServer(model, logs or tempfile.mkdtemp(), *flags,
                               env={"VLLM_CPU_OMP_THREADS_BIND": c} if c else None)
                   for c in cores]
        for server in servers:
            server.wait()
        lm = SoftReasonServer(base_url="|".join(s.url for s in servers), pretrained=model,
                              dtype=dtype, num_concurrent=NUM_CONCURRENT, max_active=max_active,
                              free_running=engine != "server-lockstep", **SEARCH)
        lm.local_servers = servers
        return lm
    if engine == "hf":
        from lm_eval_softreason.harness.hf_model import SoftReasonLM

        return SoftReasonLM(pretrained=model, device="cpu", dtype=dtype, batch_size=32,
                            max_active=max_active, **SEARCH)
    from lm_eval_softreason.harness.vllm_model import SoftReasonVLLM

    extra = {} if block_size is None else {"block_size": block_size}
    return SoftReasonVLLM(pretrained=model, dtype=dtype, enforce_eager=engine == "vllm",
                          max_model_len=4096, max_active=max_active, **SEARCH, **extra)


def requests(lm, n: int) -> list:  # type: ignore[no-untyped-def]
    from lm_eval.api.instance import Instance

    qs, _ = C.questions(n, "svamp")
    gen = {"until": C.UNTIL, "do_sample": False, "max_gen_toks": MAX_GEN}
    prompts = [lm.apply_chat_template([{"role": "user", "content": C.PROMPT.format(question=q)}])
               for q in qs]
    return [Instance("generate_until", {}, (p, gen), idx=0, metadata=("svamp", i, 1))
            for i, p in enumerate(prompts)]


def worker(spec: str, model: str, dtype: str, n: int, max_active: str, out: str) -> None:
    import torch

    from lm_eval_softreason.engines.base import DecodeRow

    engine, block_size = parse_engine(spec)
    t0 = C.now()
    lm = build(engine, model, dtype, max_active, block_size)
    start_s = C.now() - t0
    reqs = requests(lm, n)

    state = lm.engine.prefill(lm.encode_prompt(reqs[0].args[0]))
    table = lm.engine.input_embeddings()
    gen = torch.Generator().manual_seed(0)
    anchor = table[state.greedy_token].float()
    rows = [DecodeRow(state, first_token=state.greedy_token,
                      first_embed=anchor + 0.02 * torch.randn(anchor.shape, generator=gen))
            for _ in range(ROWS)]
    t0 = C.now()
    decoded = lm.engine.decode(rows, [], DECODE_TOKENS)
    decode_tok_s = sum(r.n_tokens for r in decoded) / (C.now() - t0)

    engine_stats = getattr(lm.engine, "stats", None)  # vLLM: prompt tokens sent and cached
    client = getattr(lm.engine, "client", None)  # the server engine's HTTP client
    spent = {"verifier_read_s": 0.0, "verifier_generate_s": 0.0}
    watch(lm.engine, spent)
    cells = {}
    for mode, extra in (("softreason", {}), ("sample", None)):
        if extra is None:  # self-consistency at softreason's generated tokens per question
            sr = cells["softreason"]
            per_candidate = (sr["tokens_generated"] - sr["verifier_tokens"]) / sr["candidates"]
            extra = {"n_samples": max(1, round(sr["tokens_generated"] / n / per_candidate))}
        lm.configure(mode=mode, max_active=max_active, **SEARCH, **extra)
        before = dict(engine_stats or {})
        sent = client.stats["bytes_sent"] if client else 0
        spent.update(dict.fromkeys(spent, 0.0))
        cpu0 = C.cpu_seconds()
        t0 = C.now()
        lm.generate_until(reqs, disable_tqdm=True)
        wall = C.now() - t0
        stats = lm.get_model_info()["softreason_stats"]
        ran = (stats["tokens_prefilled"] if engine_stats is None else
               (engine_stats["prompt_tokens"] - before["prompt_tokens"])
               - (engine_stats["cached_tokens"] - before["cached_tokens"]))
        cells[mode] = {"wall_per_q_s": wall / n, **extra, "prompt_tokens_run": ran,
                       "client_cpu_share": (C.cpu_seconds() - cpu0) / wall,
                       "bytes_sent_per_q": (client.stats["bytes_sent"] - sent) / n if client
                       else None,
                       **spent,
                       **{k: stats[k] for k in ("tokens_generated", "verifier_tokens", "candidates",
                                             "fallbacks", "prefill_s", "decode_s", "verify_s",
                                             "propose_s")}}
    hit = (engine_stats["cached_tokens"] / engine_stats["prompt_tokens"]
           if engine_stats and engine_stats["prompt_tokens"] else None)
    if client is not None:
        lm.engine.close()
        for server in lm.local_servers:
            server.stop()
    with open(out, "w") as fh:
        json.dump({"start_s": start_s, "decode_tok_s": decode_tok_s, "cells": cells,
                   "prefix_cache_hit": hit, "peak_rss_mb": (C._status_kb("VmHWM") or 0) / 1024}, fh)


def watch(engine, spent: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    """Time the verifier's engine calls: prefills that continue a shared prefix are its prompts
    (questions are prefilled without one), decodes at its token budget are its verdicts."""
    prefill_many, decode = engine.prefill_many, engine.decode

    def timed_prefill_many(prompts, prefix=None):  # type: ignore[no-untyped-def]
        t0 = C.now()
        try:
            return prefill_many(prompts, prefix=prefix)
        finally:
            if prefix is not None:
                spent["verifier_read_s"] += C.now() - t0

    def timed_decode(rows, until, max_new_tokens):  # type: ignore[no-untyped-def]
        t0 = C.now()
        try:
            return decode(rows, until, max_new_tokens)
        finally:
            if max_new_tokens == SEARCH["verifier_max_tokens"]:
                spent["verifier_generate_s"] += C.now() - t0

    engine.prefill_many, engine.decode = timed_prefill_many, timed_decode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    C.set_offline_env()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    if args.worker:
        engine, n, max_active, out = args.worker
        worker(engine, args.model, args.dtype, int(n), max_active, out)
        return 0
    engines = args.engines.split(",")
    for spec in engines:
        parse_engine(spec)
    got = {}
    for engine in engines:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, __file__, "--model", args.model, "--dtype", args.dtype,
                   "--worker", engine, str(args.questions), args.max_active, out.name]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{engine} cell failed:\n{done.stderr[-4000:]}")
            got[engine] = json.load(open(out.name))
    n = args.questions
    rows = []
    for engine, g in got.items():
        sr, sc = g["cells"]["softreason"], g["cells"]["sample"]
        rows.append([
            engine, f"{g['start_s']:.1f}", f"{g['decode_tok_s']:.1f}",
            f"{sr['wall_per_q_s']:.1f}", f"{sr['tokens_generated'] / n:.0f}",
            f"{3600 / sr['wall_per_q_s']:.1f}",
            f"{sc['wall_per_q_s']:.1f} (N={sc['n_samples']}, {sc['tokens_generated'] / n:.0f} tok)",
            f"{sr['wall_per_q_s'] / sc['wall_per_q_s']:.2f}",
            "-" if g["prefix_cache_hit"] is None else f"{g['prefix_cache_hit']:.0%}",
            f"{g['peak_rss_mb']:.0f}",
        ])
    print(C.md_table(["engine", "start s", "decode tok/s", "softreason s/q", "softreason tok/q",
                      "softreason q/h", "self-consistency s/q", "softreason / sc wall",
                      "prefix-cache hits", "peak RSS MiB"], rows))
    servers = {e: g for e, g in got.items() if g["cells"]["softreason"]["bytes_sent_per_q"]}
    if servers:
        print("\nThe client's side (server cells): CPU seconds per wall second of the client "
              "process, megabytes sent per question:")
        print(C.md_table(["engine", "cell", "client CPU share", "MB sent / q"], [
            [e, mode, f"{c['client_cpu_share']:.2f}", f"{c['bytes_sent_per_q'] / 1e6:.2f}"]
            for e, g in servers.items() for mode, c in g["cells"].items()]))
    print("\nWhere each cell's wall goes, per question:")
    phases = []
    for engine, g in got.items():
        for mode, c in g["cells"].items():
            phases.append([engine, mode, f"{c['wall_per_q_s']:.1f}",
                           *(f"{c[k] / n:.1f}" for k in ("prefill_s", "decode_s", "verify_s",
                                                         "verifier_read_s", "verifier_generate_s",
                                                         "propose_s")),
                           f"{c['tokens_generated'] / n:.0f}", f"{c['prompt_tokens_run'] / n:.0f}"])
    print(C.md_table(["engine", "cell", "s/q", "prefill s", "decode s", "verify s",
                      "verify: read s", "verify: generate s", "propose s", "generated tok",
                      "prompt tok run"], phases))
    if {"hf", "vllm"} <= got.keys():
        speedup = got["hf"]["cells"]["softreason"]["wall_per_q_s"] / \
            got["vllm"]["cells"]["softreason"]["wall_per_q_s"]
        print(f"\nsoftreason questions/hour, vLLM / HF: {speedup:.2f}x "
              f"(goal >= {GOAL_SPEEDUP:g}x: {'met' if speedup >= GOAL_SPEEDUP else 'NOT met'})")
    for name in got:
        if name == "hf":
            continue
        sr, sc = got[name]["cells"]["softreason"], got[name]["cells"]["sample"]
        # per generated token: the N picked to match rounds, so the token counts differ a bit
        per_token = (sr["wall_per_q_s"] / sr["tokens_generated"]) / \
            (sc["wall_per_q_s"] / sc["tokens_generated"])
        wall = sr["wall_per_q_s"] / sc["wall_per_q_s"]
        print(f"{name} softreason / self-consistency at matched tokens: wall {wall:.2f}x, per "
              f"generated token {per_token:.2f}x (goal <= {GOAL_SC_RATIO:g}: "
              f"{'met' if max(wall, per_token) <= GOAL_SC_RATIO else 'NOT met'})")
    for a, b, what in (("server", "vllm", "server / offline vLLM"),
                       ("server", "server-lockstep", "free-running / lock-step")):
        if {a, b} <= got.keys():
            ratio = got[b]["cells"]["softreason"]["wall_per_q_s"] / \
                got[a]["cells"]["softreason"]["wall_per_q_s"]
            print(f"softreason questions/hour, {what}: {ratio:.2f}x")
    if {"vllm", "vllm-compiled"} <= got.keys():
        eager, compiled = got["vllm"], got["vllm-compiled"]
        decode = compiled["decode_tok_s"] / eager["decode_tok_s"]
        per_hour = eager["cells"]["softreason"]["wall_per_q_s"] / \
            compiled["cells"]["softreason"]["wall_per_q_s"]
        print(f"vLLM compiled / eager: decode tok/s {decode:.2f}x, softreason questions/hour "
              f"{per_hour:.2f}x, start {compiled['start_s'] - eager['start_s']:+.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": C.machine_info(), "questions": n, "search": SEARCH,
                       "max_active": args.max_active, "max_gen_toks": MAX_GEN, "engines": got},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
