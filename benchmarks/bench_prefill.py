#!/usr/bin/env python
"""Prompt prefill: whole-prompt logits (what ``decoding.prefill`` did until 2026-11-23) vs the
package's ``prefill``, which asks for the last position's logits only (``logits_to_keep=1``).

Computing logits at every position has two costs:

  * time: the LM head (vocab x hidden) runs for every prompt token although only the last
    position's logits are used (for Qwen2.5-0.5B that head is ~27 % of the weights);
  * memory: for a float32 model ``out.logits[0, -1].float()`` is a view that keeps the whole
    ``[1, prompt_len, vocab]`` logits tensor alive as long as the ``PromptState``.

This measures both, interleaved over ``--repeats``: the old forward (all positions, last row
kept as a view) and ``prefill`` as it is now.

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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm_eval_softreason.compat import cache_arg, new_cache
    from lm_eval_softreason.engines.hf import prefill

    def whole_prompt(model, ids):  # type: ignore[no-untyped-def]
        """The old prefill's forward: logits for every position, the last row kept as a view."""
        with torch.inference_mode():
            t = torch.tensor([ids])
            out = model(input_ids=t, attention_mask=torch.ones_like(t),
                        position_ids=torch.arange(len(ids)).unsqueeze(0),
                        **cache_arg(model, new_cache(model)), use_cache=True)
            return out.logits[0, -1].float()

    results: dict = {"whole_prompt": {}, "prefill": {}, "retained_mb": {}, "max_abs_diff": {}}
    with C.model_dir(args.model) as (path, label):
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=C.torch_dtype(args.dtype)).eval()
        filler = tok(" ".join(C.BUILTIN_QUESTIONS), add_special_tokens=False)["input_ids"]
        lengths = [int(x) for x in args.tokens.split(",")]
        prefill(model, filler[:16])
        whole_prompt(model, filler[:16])  # warm-up
        for n in lengths:
            ids = (filler * (n // len(filler) + 1))[:n]
            ta, tl = [], []
            for rep in range(args.repeats):
                order = ("whole_prompt", "prefill")
                for which in (order if rep % 2 == 0 else order[::-1]):
                    t = time.perf_counter()
                    if which == "whole_prompt":
                        logits = whole_prompt(model, ids)
                        ta.append(time.perf_counter() - t)
                    else:
                        state = prefill(model, ids)
                        tl.append(time.perf_counter() - t)
            results["whole_prompt"][n] = C.median(ta)
            results["prefill"][n] = C.median(tl)
            results["retained_mb"][n] = {
                "whole_prompt": logits.untyped_storage().nbytes() / 2**20,
                "prefill": state.next_logits.untyped_storage().nbytes() / 2**20}
            results["max_abs_diff"][n] = float((state.next_logits - logits).abs().max())

    m = C.machine_info()
    print(f"machine: {C.cpu_model()}, {m['usable_cores']} usable cores, torch {m['torch']}, "
          f"threads {m['torch_threads']}, OMP_WAIT_POLICY {m['omp_wait_policy']}, load avg "
          f"{m['load_avg_at_start']}; model {label} ({args.dtype}); median of {args.repeats} "
          f"interleaved repeats")
    print()
    rows = [[str(n), f"{results['whole_prompt'][n]:.2f}", f"{results['prefill'][n]:.2f}",
             f"{results['whole_prompt'][n] / results['prefill'][n]:.2f}x",
             f"{results['retained_mb'][n]['whole_prompt']:.1f}",
             f"{results['retained_mb'][n]['prefill']:.2f}", f"{results['max_abs_diff'][n]:.1e}"]
            for n in lengths]
    print(C.md_table(["prompt tokens", "whole-prompt logits s", "prefill() s", "speed-up",
                      "MiB kept per state, whole-prompt", "MiB kept per state, prefill()",
                      "max |logit diff|"], rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": m, "model": label, "args": vars(args), **results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
