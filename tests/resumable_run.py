"""A softreason evaluation that can kill itself part-way (for the resume tests).

    python -m tests.resumable_run MODEL_DIR OUT.json --cache DB --trace T.jsonl \
        [--kill-after-traced K | --kill-at-decode N] [--signal KILL|TERM|INT] [--max-active M]

``--kill-after-traced K`` dies right after the K-th trace line is written (before that
question's cache entry: the worst moment for a resume); ``--kill-at-decode N`` dies at the
start of the N-th engine decode call (mid-round). The process sends itself ``--signal``
(default KILL; INT raises KeyboardInterrupt, TERM ends it at once). OUT.json gets the samples
and metrics.
"""

from __future__ import annotations

import argparse
import json
import signal
from typing import Any


def _die(sig: signal.Signals) -> None:
    """Signal this thread now: ``os.kill`` may hand the signal to another thread, and Python
    then raises SIGINT's KeyboardInterrupt in whatever frame runs next, where a run that was
    nearly done could finish first."""
    signal.raise_signal(sig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--cache", required=True)
    p.add_argument("--trace", required=True)
    p.add_argument("--limit", type=int, default=6)
    p.add_argument("--max-active", default="2")
    p.add_argument("--kill-after-traced", type=int, default=None)
    p.add_argument("--kill-at-decode", type=int, default=None)
    p.add_argument("--signal", choices=("KILL", "TERM", "INT"), default="KILL")
    args = p.parse_args()
    sig = signal.Signals[f"SIG{args.signal}"]
    # A shell starts background jobs with SIGINT ignored, and children inherit that: restore
    # Python's KeyboardInterrupt so the test does not depend on how the suite was launched.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    import lm_eval
    from lm_eval.tasks import TaskManager

    from lm_eval_softreason.harness.hf_model import SoftReasonLM
    from lm_eval_softreason.tasks_path import tasks_dir
    from tests.helpers import FAST

    lm = SoftReasonLM(pretrained=args.model, device="cpu", batch_size=8,
                      trace_path=args.trace, max_active=args.max_active, **FAST)
    if args.kill_after_traced is not None:
        write, written = lm._trace.write, []

        def write_then_die(record: dict[str, Any]) -> None:
            write(record)
            written.append(1)
            if len(written) == args.kill_after_traced:
                _die(sig)

        lm._trace.write = write_then_die
    if args.kill_at_decode is not None:
        decode, calls = lm.engine.decode, []

        def die_at(*a: Any, **kw: Any) -> Any:
            calls.append(1)
            if len(calls) == args.kill_at_decode:
                _die(sig)
            return decode(*a, **kw)

        lm.engine.decode = die_at
    results = lm_eval.simple_evaluate(
        model=lm, tasks=["svamp"], limit=args.limit, use_cache=args.cache, log_samples=True,
        gen_kwargs="max_gen_toks=12",
        task_manager=TaskManager(include_path=tasks_dir(), include_defaults=False),
    )
    samples = [{k: s.get(k) for k in ("doc_id", "filter", "resps", "filtered_resps",
                                      "exact_match")} for s in results["samples"]["svamp"]]
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump({"samples": samples, "results": results["results"]}, fh, indent=1,
                  sort_keys=True, default=str)


if __name__ == "__main__":
    main()
