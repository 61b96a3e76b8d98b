#!/usr/bin/env python
"""How fast ``lm-eval-softreason view`` opens a large run: a synthetic lm-eval results folder
(1,000 questions x 25 candidates by default, texts of a real run's length), its page written,
then loaded in headless Chromium.

Printed: the page's size, the time to write it, and the time to first render, which the page
itself stores in the DOM (``performance.now()`` after the first frame is painted, from the
start of navigation: reading the file, parsing the embedded JSON, building the first page of
questions) and Selenium reads back, then the time the "wrong answers" filter takes; medians of
``--loads`` loads, each in a fresh browser.

    python benchmarks/bench_view.py [--questions 1000] [--candidates 25] [--loads 3]

Needs Debian's ``chromium`` and ``chromium-driver`` and ``selenium`` (tests/browser.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common as C

sys.path.insert(0, str(C.REPO))
from tests import browser  # noqa: E402  (the tests' headless Chromium)

from lm_eval_softreason import view  # noqa: E402
from lm_eval_softreason.strategies.config import SoftReasonConfig  # noqa: E402

STAMP = "2026-01-01T00-00-00.000000"
WORDS = ("apples", "total", "so", "then", "each", "more", "left", "we", "have", "the", "is",
         "of", "and", "she", "buys", "gives", "away", "+", "-", "=", "*")


def text(rng: random.Random, words: int) -> str:
    """Reasoning-like filler of ``words`` words with numbers, ending in an answer."""
    body = " ".join(rng.choice(WORDS) if rng.random() < 0.8 else str(rng.randint(1, 99))
                    for _ in range(words))
    return f"{body}. The answer is {rng.randint(1, 99)}."


def synthetic_run(folder: Path, questions: int, candidates: int, seed: int = 0) -> Path:
    """An lm-eval ``--output_path`` folder (results, samples) and its trace, of the shape a
    softreason run with ``candidates`` candidates per question writes; returns the trace."""
    rng = random.Random(seed)
    config = SoftReasonConfig(n_init=5, batch=5, max_rounds=4)
    run = folder / "out" / "model"
    run.mkdir(parents=True)
    (run / f"results_{STAMP}.json").write_text(json.dumps({
        "results": {"svamp": {}},
        "config": {"model": "softreason", "model_args": {}, "softreason": config.public_dict()},
    }), encoding="utf-8")
    samples, trace = [], []
    for doc in range(questions):
        prompt = f"Q: {text(rng, 60)}\nEnd your response with \"The answer is N.\"\nA:"
        sha = hashlib.sha256(prompt.encode()).hexdigest()
        cands = [{"round": i // 5, "text": text(rng, 90), "answer": str(rng.randint(1, 99)),
                  "tokens": rng.randint(40, 200), "r_verifier": float(rng.random() < 0.3),
                  "r_coherence": round(rng.random(), 4), "reward": round(rng.random() * 2, 4),
                  "confidence": None} for i in range(candidates)]
        chosen = max(range(candidates), key=lambda i: cands[i]["reward"])
        gold = str(rng.randint(1, 99))
        for filt in ("strict-match", "flexible-extract"):
            samples.append({"doc_id": doc, "target": gold, "arguments": [[prompt, {}]],
                            "resps": [[cands[chosen]["text"]]],
                            "filtered_resps": [cands[chosen]["answer"]], "filter": filt,
                            "metrics": ["exact_match"], "prompt_hash": sha,
                            "exact_match": float(cands[chosen]["answer"] == gold)})
        rounds = (candidates + 4) // 5
        trace.append({"strategy": "softreason", "task": "svamp", "rounds": rounds,
                      "stop_reason": "max_rounds", "fallback": None,
                      "tokens_generated": sum(c["tokens"] for c in cands), "chosen": chosen,
                      "verifier_answers": [str(rng.randint(1, 99)) for _ in range(rounds)],
                      "verifier_analyses": [text(rng, 150) for _ in range(rounds)],
                      "candidates": cands, "prompt_sha": sha[:16],
                      "config": config.fingerprint()})
    (run / f"samples_svamp_{STAMP}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in samples), encoding="utf-8")
    path = folder / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in trace), encoding="utf-8")
    return path


def open_page(page: Path) -> tuple[float, float]:
    """``page`` opened in a fresh browser (new process and profile, nothing cached): the time to
    first render that the page records, and the milliseconds its script takes to apply the
    "wrong answers" filter (scan every question, build the first page of those shown; layout
    not included)."""
    from selenium.webdriver.support.ui import WebDriverWait

    with browser.chromium() as driver:
        driver.get(page.as_uri())
        rendered = float(WebDriverWait(driver, 120).until(
            lambda d: d.find_element("tag name", "body").get_attribute("data-rendered-ms")))
        filtered = driver.execute_script(
            "const t = performance.now(); document.getElementById('f-wrong').click();"
            "return performance.now() - t;")
        return rendered, float(filtered)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=1000)
    p.add_argument("--candidates", type=int, default=25)
    p.add_argument("--loads", type=int, default=3, help="fresh loads; the median is printed")
    args = p.parse_args(argv)
    why = browser.missing()
    if why:
        sys.exit(why)
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        trace = synthetic_run(Path(tmp), args.questions, args.candidates)
        page = Path(tmp) / "view.html"
        started = time.perf_counter()
        assert view.main([str(Path(tmp) / "out"), "--trace", str(trace), "-o", str(page)]) == 0
        write_s = time.perf_counter() - started
        loads = [open_page(page) for _ in range(args.loads)]
        times = [rendered for rendered, _ in loads]
        print(f"{args.questions} questions x {args.candidates} candidates: page "
              f"{page.stat().st_size / 1e6:.1f} MB, written in {write_s:.1f} s; time to "
              f"first render {statistics.median(times):.0f} ms (median of {args.loads} loads: "
              f"{', '.join(f'{t:.0f}' for t in times)} ms); the wrong-answers filter "
              f"{statistics.median(f for _, f in loads):.0f} ms; load average {load_start} at the "
              f"start, {[round(x, 2) for x in os.getloadavg()]} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
