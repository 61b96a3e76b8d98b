#!/usr/bin/env python
"""Prompt prefill: ``lm_eval_softreason.decoding.prefill`` as it is vs last-position logits only.

``prefill`` runs the model over the whole prompt and keeps ``out.logits[0, -1].float()``. Two
costs follow from computing logits at every position:

  * time: the LM head (vocab x hidden) runs for every prompt token although only the last
    position's logits are used (for Qwen2.5-0.5B that head is ~27 % of the weights);
  * memory: for a float32 model ``.float()`` is a no-op, so ``next_logits`` is a view that keeps
    the whole ``[1, prompt_len, vocab]`` logits tensor alive as long as the ``PromptState``.

This measures both, interleaved over ``--repeats``, for the package's ``prefill`` and for the
same forward call with ``logits_to_keep=1`` (transformers' way to compute only the last
position's logits; the resulting KV cache and last logits are the same).

Usage::

    python benchmarks/bench_prefill.py --model DIR [--tokens 100,400,800] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import _common as C

C.set_offline_env()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="HF model folder (default: tiny test model)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--tokens", default="100,400,800", help="prompt lengths")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    from lm_eval_softreason.decoding import prefill

    def last_only(model, ids):  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            t = torch.tensor([ids])
            out = model(input_ids=t, attention_mask=torch.ones_like(t),
                        position_ids=torch.arange(len(ids)).unsqueeze(0),
                        past_key_values=DynamicCache(config=model.config), use_cache=True,
                        logits_to_keep=1)
            return out.logits[0, -1].float()

    results: dict = {"asis": {}, "last_only": {}, "retained_mb": {}, "max_abs_diff": {}}
    with C.model_dir(args.model) as (path, label):
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=C.torch_dtype(args.dtype)).eval()
        filler = tok(" ".join(C.BUILTIN_QUESTIONS), add_special_tokens=False)["input_ids"]
        lengths = [int(x) for x in args.tokens.split(",")]
        prefill(model, filler[:16])
        last_only(model, filler[:16])  # warm-up
        for n in lengths:
            ids = (filler * (n // len(filler) + 1))[:n]
            ta, tl = [], []
            for rep in range(args.repeats):
                for which in (("asis", "last") if rep % 2 == 0 else ("last", "asis")):
                    t = time.perf_counter()
                    if which == "asis":
                        state = prefill(model, ids)
                        ta.append(time.perf_counter() - t)
                    else:
                        logits = last_only(model, ids)
                        tl.append(time.perf_counter() - t)
            storage = state.next_logits.untyped_storage().nbytes() / 2**20
            results["asis"][n] = C.median(ta)
            results["last_only"][n] = C.median(tl)
            results["retained_mb"][n] = storage
            results["max_abs_diff"][n] = float((state.next_logits - logits).abs().max())

    m = C.machine_info()
    print(f"machine: {C.cpu_model()}, {m['usable_cores']} usable cores, torch {m['torch']}, "
          f"threads {m['torch_threads']}, OMP_WAIT_POLICY {m['omp_wait_policy']}, load avg "
          f"{m['load_avg_at_start']}; model {label} ({args.dtype}); median of {args.repeats} "
          f"interleaved repeats")
    print()
    rows = [[str(n), f"{results['asis'][n]:.2f}", f"{results['last_only'][n]:.2f}",
             f"{results['asis'][n] / results['last_only'][n]:.2f}x",
             f"{results['retained_mb'][n]:.1f}", f"{results['max_abs_diff'][n]:.1e}"]
            for n in lengths]
    print(C.md_table(["prompt tokens", "prefill() s", "logits_to_keep=1 s", "speed-up",
                      "MiB kept alive by PromptState.next_logits", "max |logit diff|"], rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": m, "model": label, "args": vars(args), **results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
