#!/usr/bin/env python
"""Side-by-side performance figures of Soft Reasoning on one model and one set of questions.

Everything is measured in ONE process, on the same loaded model and the same questions, with
the compared variants interleaved, so background load on a shared machine affects both sides
alike; ratios are what to read, absolute numbers move with the machine.

  a. candidate decoding throughput: our ``BatchDecoder`` (prompt prefilled once, N rows with a
     perturbed ``first_embed``) vs HF ``model.generate(do_sample=True,
     num_return_sequences=N)``, both forced to exactly ``--max-new-tokens`` tokens per row
     (no stop strings, EOS ignored / ``min_new_tokens``). Goal: ratio >= 0.9.
  b. prefill tokens per question, softreason vs greedy, counted where prompts are run through
     the model (``lm_eval_softreason.harness.hf_model.prefill`` / ``.verifiers``' prefix). Goal for the
     candidate prompts: <= 1.1x greedy. Verifier prefill is reported separately.
  c. share of softreason wall time in GP fitting + acquisition (the runner's
     ``_propose_round``, all questions' BO steps of a round, timed by wrapping it). Goal: <= 3 %.
  d. wall time per question: all questions in one ``generate_until`` call (lock-step) vs one
     call per question, same configuration.
  e. peak resident memory (RSS high-water mark) of each of the above.

The speed goals (a, c, d) are judged only on a real model (``--model``); on the tests' tiny
model, where per-call overheads rather than the model decide them, they are shown without a
verdict.

Usage::

    python benchmarks/bench_search.py --quick                       # CI-sized, tiny model
    python benchmarks/bench_search.py --model DIR --questions 6 --max-new-tokens 96 \
        --max-rounds 1 --json out.json

Set SOFTREASON_DATA_DIR to use real SVAMP/GSM8K questions (else a few built-in ones).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections import defaultdict
from typing import TYPE_CHECKING

import _common as C

if TYPE_CHECKING:
    from lm_eval_softreason.harness.hf_model import SoftReasonLM

C.set_offline_env()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="HF model folder (default: the tests' tiny random model, in a temp dir)")
    p.add_argument("--quick", action="store_true",
                   help="CI-sized run: tiny model, 3 questions, 16 tokens, 1 BO round (< 2 min)")
    p.add_argument("--questions", type=int, default=None, help="questions (default 4; quick 3)")
    p.add_argument("--dataset", choices=sorted(C.TASKS), default="svamp")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="new tokens per candidate (default 96; quick 16)")
    p.add_argument("--verifier-max-tokens", type=int, default=None,
                   help="verifier's new tokens (default: same as --max-new-tokens)")
    p.add_argument("--max-rounds", type=int, default=None, help="BO rounds (default 1)")
    p.add_argument("--n-init", type=int, default=5, help="initial candidates per question")
    p.add_argument("--bo-batch", type=int, default=5, help="candidates per BO round")
    p.add_argument("--batch-size", default="auto", help="rows per decode batch (model arg)")
    p.add_argument("--seqs", type=int, default=None,
                   help="sequences for the throughput comparison (a) (default: questions*n_init, "
                        "at most 32)")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved repetitions of (a) (default 3)")
    p.add_argument("--search-repeats", type=int, default=1,
                   help="interleaved repetitions of the lock-step/sequential pair (d)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: "
                   "torch's default)")
    p.add_argument("--omp-wait-policy", choices=["PASSIVE", "ACTIVE"], default=None,
                   help="set OMP_WAIT_POLICY (re-executes this script with it: OpenMP reads it "
                        "at start-up); default: leave the environment as it is")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--verbose", action="store_true", help="show lm-eval / transformers logs")
    args = p.parse_args(argv)
    if args.quick:
        args.model = None
    args.questions = args.questions or (3 if args.quick else 4)
    args.max_new_tokens = args.max_new_tokens or (16 if args.quick else 96)
    args.verifier_max_tokens = args.verifier_max_tokens or args.max_new_tokens
    args.max_rounds = 1 if args.max_rounds is None else args.max_rounds
    args.repeats = args.repeats or 3
    args.seqs = args.seqs or min(32, args.questions * args.n_init)
    return args


# --- instrumentation ----------------------------------------------------------------------


class Probe:
    """Wraps the package's seams (without editing it) to count tokens and time stages."""

    def __init__(self) -> None:
        self.time: dict[str, float] = defaultdict(float)
        self.tokens: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        self.time.clear()
        self.tokens.clear()
        self.calls.clear()

    def snapshot(self) -> dict:
        return {"time_s": dict(self.time), "tokens": dict(self.tokens), "calls": dict(self.calls)}

    def _timed(self, key: str, fn, count=None):  # type: ignore[no-untyped-def]
        probe = self

        def wrapper(*a, **kw):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            out = fn(*a, **kw)
            k = key(*a, **kw) if callable(key) else key
            probe.time[k] += time.perf_counter() - t
            probe.calls[k] += 1
            if count is not None:
                probe.tokens[k] += count(out)
            return out

        return wrapper

    def install(self) -> None:
        import lm_eval_softreason.strategies.runner as runner_mod
        from lm_eval_softreason.scoring.verifiers import ModelVerifier
        from lm_eval_softreason.engines.hf import HFEngine

        # Questions joining the window are prefilled in one prefill_many call without a
        # prefix; the verifier's prompts continue its shared instruction prefix.
        HFEngine.prefill_many = self._timed(
            lambda engine, prompts, prefix=None: "verifier_prefill" if prefix is not None
            else "prompt_prefill", HFEngine.prefill_many,
            lambda states: sum(s.prefilled_tokens for s in states))
        # The instruction prefix itself: prefilled once per model, then served from a cache.
        seen: set[int] = set()

        def new_prefix_tokens(state) -> int:  # type: ignore[no-untyped-def]
            if id(state) in seen:
                return 0
            seen.add(id(state))
            return state.prefilled_tokens

        ModelVerifier._prefix = self._timed(
            "verifier_prefix_prefill", ModelVerifier._prefix, new_prefix_tokens)
        # all questions' BO steps of a round (in-process, or in bo_workers processes)
        runner_mod.WindowedRunner._propose_round = self._timed(
            "propose", runner_mod.WindowedRunner._propose_round)
        runner_mod.WindowedRunner._decode_round = self._timed(
            "candidate_round", runner_mod.WindowedRunner._decode_round)
        ModelVerifier.verify_many = self._timed("verifier", ModelVerifier.verify_many)


# --- (a) decode throughput ----------------------------------------------------------------


def ours_once(lm: SoftReasonLM, prompt: str, n: int, max_new: int, seed: int) -> dict:
    import torch

    from lm_eval_softreason.engines.base import DecodeRow
    from lm_eval_softreason.engines.hf import BatchDecoder, prefill
    from lm_eval_softreason.strategies.softreason.perturbation import EmbeddingSpace

    model, tok = lm.model, lm.tokenizer
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    # No EOS ids and no stop strings: every row runs exactly max_new tokens.
    decoder = BatchDecoder(model, tok, eos_token_ids=[], max_batch=n)
    t0 = time.perf_counter()
    state = prefill(model, ids)
    t1 = time.perf_counter()
    table = model.get_input_embeddings().weight.detach()
    space = EmbeddingSpace(table[state.greedy_token], lm.sr_config,
                           torch.Generator().manual_seed(seed), lm._embedding_std)
    rows = [DecodeRow(state, first_token=state.greedy_token, first_embed=space.to_vector(u))
            for u in space.initial_points(n)]
    res = decoder.decode(rows, [], max_new)
    t2 = time.perf_counter()
    produced = sum(r.n_tokens for r in res)
    assert produced == n * max_new, (produced, n * max_new)
    return {"tokens": produced, "prompt_tokens": len(ids), "total_s": t2 - t0,
            "prefill_s": t1 - t0, "decode_s": t2 - t1,
            "decode_tokens": produced - n,  # the first token comes from the prompt's logits
            "distinct_texts": len({tuple(r.tokens) for r in res})}


def hf_once(lm: SoftReasonLM, prompt: str, n: int, max_new: int, seed: int) -> dict:
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class FirstStep(LogitsProcessor):
        """Records when the first logits arrive: the end of the prompt's prefill."""

        def __init__(self) -> None:
            self.at: float | None = None

        def __call__(self, input_ids, scores):  # type: ignore[no-untyped-def]
            if self.at is None:
                self.at = time.perf_counter()
            return scores

    model, tok = lm.model, lm.tokenizer
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    first = FirstStep()
    torch.manual_seed(seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else lm.eot_token_id
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **enc, do_sample=True, num_return_sequences=n, max_new_tokens=max_new,
            min_new_tokens=max_new, temperature=1.0, top_k=0, top_p=1.0,
            logits_processor=LogitsProcessorList([first]), pad_token_id=pad,
        )
    t2 = time.perf_counter()
    new = out.shape[1] - enc["input_ids"].shape[1]
    assert new == max_new, (new, max_new)
    produced = n * new
    return {"tokens": produced, "prompt_tokens": int(enc["input_ids"].shape[1]),
            "total_s": t2 - t0, "prefill_s": first.at - t0, "decode_s": t2 - first.at,
            "decode_tokens": produced - n}


def bench_decode(lm: SoftReasonLM, prompt: str, n: int, max_new: int, repeats: int) -> dict:
    # Warm up both paths once (allocator, kernels) with a few tokens, untimed.
    ours_once(lm, prompt, min(n, 2), 2, 0)
    hf_once(lm, prompt, min(n, 2), 2, 0)
    runs: dict[str, list[dict]] = {"ours": [], "hf": []}
    peaks: dict[str, float] = {"ours": 0.0, "hf": 0.0}
    deltas: dict[str, float] = {"ours": 0.0, "hf": 0.0}
    for rep in range(repeats):
        order = ("ours", "hf") if rep % 2 == 0 else ("hf", "ours")
        for name in order:
            fn = ours_once if name == "ours" else hf_once
            with C.PeakRSS() as mem:
                runs[name].append(fn(lm, prompt, n, max_new, 1000 + rep))
            peaks[name] = max(peaks[name], mem.peak_mb)
            deltas[name] = max(deltas[name], mem.delta_mb)
    out: dict = {"seqs": n, "max_new_tokens": max_new, "repeats": repeats, "runs": runs}
    for name in runs:
        rs = runs[name]
        out[name] = {
            "tok_per_s": C.median([r["tokens"] / r["total_s"] for r in rs]),
            "decode_tok_per_s": C.median([r["decode_tokens"] / r["decode_s"] for r in rs]),
            "prefill_s": C.median([r["prefill_s"] for r in rs]),
            "peak_rss_mb": peaks[name], "peak_rss_delta_mb": deltas[name],
        }
    # Ratios per interleaved pair, then the median: robust to load that changes over time.
    out["ratio"] = C.median([o["tokens"] / o["total_s"] / (h["tokens"] / h["total_s"])
                             for o, h in zip(runs["ours"], runs["hf"])])
    out["decode_ratio"] = C.median([
        o["decode_tokens"] / o["decode_s"] / (h["decode_tokens"] / h["decode_s"])
        for o, h in zip(runs["ours"], runs["hf"])])
    return out


# --- (b)-(e) searches -----------------------------------------------------------------------


def make_requests(prompts: list[str], task: str, max_new: int) -> list:
    from lm_eval.api.instance import Instance

    gen_kwargs = {"until": list(C.UNTIL), "do_sample": False, "max_gen_toks": max_new}
    return [Instance("generate_until", doc={}, arguments=(p, dict(gen_kwargs)), idx=i,
                     metadata=(task, i, 1)) for i, p in enumerate(prompts)]


def run_search(lm: SoftReasonLM, probe: Probe, requests: list, mode: str,
               per_question: bool) -> dict:
    lm.sr_config = dataclasses.replace(lm.sr_config, mode=mode)
    before = dict(lm._stats)
    probe.reset()
    with C.PeakRSS() as mem:
        t0 = time.perf_counter()
        if per_question:
            outputs = [lm.generate_until([r], disable_tqdm=True)[0] for r in requests]
        else:
            outputs = lm.generate_until(requests, disable_tqdm=True)
        wall = time.perf_counter() - t0
    stats = {k: lm._stats[k] - before[k] for k in before}
    return {"mode": mode, "per_question": per_question, "wall_s": wall,
            "wall_per_question_s": wall / len(requests), "outputs": outputs, "stats": stats,
            "probe": probe.snapshot(), "peak_rss_mb": mem.peak_mb,
            "peak_rss_delta_mb": mem.delta_mb}


def breakdown(run: dict) -> dict:
    t = run["probe"]["time_s"]
    parts = {
        "prompt prefill": t.get("prompt_prefill", 0.0),
        "candidate decode + scoring": t.get("candidate_round", 0.0),
        "verifier (prefill + decode)": t.get("verifier", 0.0),
        "GP fit + acquisition": t.get("propose", 0.0),
    }
    parts["other"] = run["wall_s"] - sum(parts.values())
    return {k: {"s": v, "share": v / run["wall_s"]} for k, v in parts.items()}


# --- report ---------------------------------------------------------------------------------


def fmt(x: float, nd: int = 1) -> str:
    return f"{x:,.{nd}f}"


def goal(target: str, ok: bool, applies: bool = True) -> list[str]:
    """The goal and status cells; a goal that does not apply shows no verdict."""
    if not applies:
        return [f"({target} on a real model)", ""]
    return [target, "met" if ok else "NOT met"]


def report(res: dict) -> str:
    a, b = res["decode"], res["prefill"]
    lock, seq, greedy = res["lockstep"], res["sequential"], res["greedy"]
    gp = res["gp"]
    # The speed goals are about real models: on the tests' tiny one (--quick, or no --model)
    # per-call overheads, not the model, decide throughput and time shares. Token counts are
    # the same on any model.
    timed = not res["config"]["tiny_model"]
    rows = [
        ["a. candidate throughput, end to end (tok/s)", fmt(a["ours"]["tok_per_s"]),
         f"HF generate: {fmt(a['hf']['tok_per_s'])}", f"{a['ratio']:.2f}",
         *goal(">= 0.9", a["ratio"] >= 0.9, timed)],
        ["a. candidate throughput, decode steps only (tok/s)", fmt(a["ours"]["decode_tok_per_s"]),
         f"HF generate: {fmt(a['hf']['decode_tok_per_s'])}", f"{a['decode_ratio']:.2f}",
         *goal(">= 0.9", a["decode_ratio"] >= 0.9, timed)],
        ["b. candidate-prompt prefill (tok/question)", fmt(b["candidate_per_q"]),
         f"greedy: {fmt(b['greedy_per_q'])}", f"{b['candidate_ratio']:.2f}",
         *goal("<= 1.1", b["candidate_ratio"] <= 1.1)],
        ["b. same, if each candidate re-ran its prompt", fmt(b["naive_per_q"]),
         f"greedy: {fmt(b['greedy_per_q'])}", f"{b['naive_ratio']:.2f}", "(context)", ""],
        ["b. verifier prefill (tok/question)", fmt(b["verifier_per_q"]),
         f"greedy: {fmt(b['greedy_per_q'])}", f"{b['verifier_ratio']:.2f}", "(reported)", ""],
        ["b. verifier instruction prefix (tok, once per model)", fmt(b["verifier_prefix"], 0),
         "", "", "(reported)", ""],
        ["c. GP fit + acquisition share of softreason wall", f"{fmt(gp['propose_s'], 2)} s",
         f"wall: {fmt(gp['wall_s'], 1)} s, {gp['calls']} BO rounds", f"{100 * gp['share']:.2f} %",
         *goal("<= 3 %", gp["share"] <= 0.03, timed)],
        ["d. wall per question, lock-step vs one call per question (s)",
         fmt(lock["wall_per_question_s"], 2),
         f"one-by-one: {fmt(seq['wall_per_question_s'], 2)}", f"{res['lockstep_ratio']:.2f}",
         *goal("< 1 (faster)", res["lockstep_ratio"] < 1, timed)],
        ["d. (context) greedy wall per question (s)", fmt(greedy["wall_per_question_s"], 2),
         "", f"softreason/greedy {lock['wall_s'] / greedy['wall_s']:.1f}x", "", ""],
    ]
    table = C.md_table(["figure", "softreason", "reference", "ratio", "goal", "status"], rows)

    mem_rows = [
        ["a. our BatchDecoder, %d rows" % a["seqs"], fmt(a["ours"]["peak_rss_mb"], 0),
         fmt(a["ours"]["peak_rss_delta_mb"], 0)],
        ["a. HF generate, %d sequences" % a["seqs"], fmt(a["hf"]["peak_rss_mb"], 0),
         fmt(a["hf"]["peak_rss_delta_mb"], 0)],
        ["greedy, lock-step", fmt(greedy["peak_rss_mb"], 0), fmt(greedy["peak_rss_delta_mb"], 0)],
        ["softreason, lock-step", fmt(lock["peak_rss_mb"], 0), fmt(lock["peak_rss_delta_mb"], 0)],
        ["softreason, one call per question", fmt(seq["peak_rss_mb"], 0),
         fmt(seq["peak_rss_delta_mb"], 0)],
    ]
    mem = C.md_table(["e. peak RSS", "peak (MiB)", "above start of phase (MiB)"], mem_rows)

    br_rows = []
    bl, bs = breakdown(lock), breakdown(seq)
    for k in bl:
        br_rows.append([k, f"{fmt(bl[k]['s'], 1)} s ({100 * bl[k]['share']:.1f} %)",
                        f"{fmt(bs[k]['s'], 1)} s ({100 * bs[k]['share']:.1f} %)"])
    br = C.md_table(["softreason wall time", "lock-step", "one call per question"], br_rows)

    st = lock["stats"]
    m = res["machine"]
    cfg = res["config"]
    lines = [
        f"machine: {m['cpu_model']}, {m['usable_cores']} usable cores, {m['ram_gb']} GB RAM, "
        f"torch {m['torch']}, transformers {m['transformers']}, threads {m['torch_threads']}, "
        f"dtype {cfg['dtype']}, OMP_WAIT_POLICY {m['omp_wait_policy']}, "
        f"load avg at start {m['load_avg_at_start']} / end {m['load_avg_at_end']}",
        f"model: {cfg['model']}; questions: {cfg['question_source']}; "
        f"max_new_tokens {cfg['max_new_tokens']}, verifier_max_tokens "
        f"{cfg['verifier_max_tokens']}, n_init {cfg['n_init']}, batch {cfg['bo_batch']}, "
        f"max_rounds {cfg['max_rounds']}, batch_size {cfg['batch_size']}; (a) {a['seqs']} "
        f"sequences x {a['max_new_tokens']} tokens, median of {a['repeats']} interleaved pairs; "
        f"mean prompt {fmt(b['greedy_per_q'], 0)} tokens",
        "",
        table,
        "",
        br,
        "",
        mem,
        "",
        f"softreason (lock-step): {st['candidates']:.0f} candidates, {st['rounds']:.0f} rounds, "
        f"{st['tokens_generated']:.0f} tokens generated ({st['verifier_tokens']:.0f} by the "
        f"verifier), {st['fallbacks']:.0f} fallbacks; outputs identical lock-step vs one-by-one: "
        f"{res['identical_outputs']}/{len(lock['outputs'])}; (a) distinct candidate texts "
        f"{a['runs']['ours'][0]['distinct_texts']}/{a['seqs']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.omp_wait_policy and os.environ.get("OMP_WAIT_POLICY") != args.omp_wait_policy:
        if "torch" in sys.modules:
            raise SystemExit("--omp-wait-policy needs a fresh process; set OMP_WAIT_POLICY")
        env = {**os.environ, "OMP_WAIT_POLICY": args.omp_wait_policy}
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                  env)
    if not args.verbose:
        logging.disable(logging.WARNING)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from lm_eval_softreason.harness.hf_model import SoftReasonLM

    probe = Probe()
    probe.install()
    started = time.perf_counter()
    with C.model_dir(args.model) as (path, label):
        qs, source = C.questions(args.questions, args.dataset)
        prompts = [C.PROMPTS[args.dataset].format(question=q) for q in qs]
        task = C.TASKS[args.dataset]
        lm = SoftReasonLM(
            pretrained=path, device="cpu", dtype=args.dtype, batch_size=args.batch_size,
            max_rounds=args.max_rounds, n_init=args.n_init, batch=args.bo_batch,
            verifier_max_tokens=args.verifier_max_tokens,
        )
        machine = C.machine_info()
        machine["cpu_model"] = C.cpu_model()
        print(f"# loaded {label} ({args.dtype}) in {time.perf_counter() - started:.1f} s; "
              f"{len(prompts)} questions from {source}", file=sys.stderr)

        # (a) decode throughput, interleaved repeats.
        t = time.perf_counter()
        decode = bench_decode(lm, prompts[0], args.seqs, args.max_new_tokens, args.repeats)
        print(f"# (a) done in {time.perf_counter() - t:.0f} s", file=sys.stderr)

        # Warm one-time costs out of the timed runs: answer filters, verifier prefix.
        requests = make_requests(prompts, task, args.max_new_tokens)
        lm._extractor(task)
        verifier = lm.verifier
        probe.reset()
        from lm_eval_softreason.scoring.verification import VerifyRequest

        [(prefix, _)] = verifier.build_prompts(VerifyRequest(prompts[0], ["x"], [None], task))
        # what verify_many would prefill first
        verifier._prefix(prefix, prefix != verifier.instructions)
        verifier_prefix = probe.tokens.get("verifier_prefix_prefill", 0)

        # (b) greedy reference, then (c)-(e) lock-step and one-by-one, interleaved.
        t = time.perf_counter()
        greedy = run_search(lm, probe, requests, "greedy", per_question=False)
        locks, seqs = [], []
        for rep in range(args.search_repeats):
            pair = [(locks, False), (seqs, True)]
            for store, per_q in (pair if rep % 2 == 0 else pair[::-1]):
                store.append(run_search(lm, probe, requests, "softreason", per_question=per_q))
        print(f"# searches done in {time.perf_counter() - t:.0f} s", file=sys.stderr)

    nq = len(requests)
    lock = min(locks, key=lambda r: r["wall_s"]) if len(locks) > 1 else locks[0]
    seq = min(seqs, key=lambda r: r["wall_s"]) if len(seqs) > 1 else seqs[0]
    lock = {**lock, "wall_s": C.median([r["wall_s"] for r in locks])}
    seq = {**seq, "wall_s": C.median([r["wall_s"] for r in seqs])}
    lock["wall_per_question_s"] = lock["wall_s"] / nq
    seq["wall_per_question_s"] = seq["wall_s"] / nq
    greedy_prefill = greedy["probe"]["tokens"].get("prompt_prefill", 0) / nq
    tok = lock["probe"]["tokens"]
    cand = tok.get("prompt_prefill", 0) / nq
    verif = tok.get("verifier_prefill", 0) / nq
    cands_per_q = lock["stats"]["candidates"] / nq
    prefill = {
        "greedy_per_q": greedy_prefill, "candidate_per_q": cand,
        "candidate_ratio": cand / greedy_prefill,
        "naive_per_q": greedy_prefill * cands_per_q, "naive_ratio": cands_per_q,
        "verifier_per_q": verif, "verifier_ratio": verif / greedy_prefill,
        "verifier_prefix": verifier_prefix,
        "stats_tokens_prefilled_per_q": lock["stats"]["tokens_prefilled"] / nq,
    }
    propose_s = C.median([r["probe"]["time_s"].get("propose", 0.0) for r in locks])
    gp = {"propose_s": propose_s, "wall_s": lock["wall_s"],
          "share": propose_s / lock["wall_s"],
          "calls": lock["probe"]["calls"].get("propose", 0),
          "share_one_by_one": C.median([r["probe"]["time_s"].get("propose", 0.0) / r["wall_s"]
                                        for r in seqs])}
    identical = sum(a == b for a, b in zip(lock["outputs"], seq["outputs"]))
    machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res = {
        "machine": machine,
        "config": {"model": label, "tiny_model": args.model is None,
                   "question_source": source, "questions": nq,
                   "dataset": args.dataset, "dtype": args.dtype,
                   "max_new_tokens": args.max_new_tokens,
                   "verifier_max_tokens": args.verifier_max_tokens, "n_init": args.n_init,
                   "bo_batch": args.bo_batch, "max_rounds": args.max_rounds,
                   "batch_size": lm.engine.decoder.max_batch, "quick": args.quick,
                   "search_repeats": args.search_repeats},
        "decode": decode, "prefill": prefill, "gp": gp,
        "greedy": greedy, "lockstep": lock, "sequential": seq,
        "lockstep_runs_s": [r["wall_s"] for r in locks],
        "sequential_runs_s": [r["wall_s"] for r in seqs],
        "lockstep_ratio": lock["wall_s"] / seq["wall_s"],
        "identical_outputs": identical,
        "total_s": time.perf_counter() - started,
    }
    res["breakdown"] = {"lockstep": breakdown(lock), "sequential": breakdown(seq)}
    print(report(res))
    print(f"\n(total {res['total_s']:.0f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
