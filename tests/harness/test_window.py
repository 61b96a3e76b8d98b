"""The window of questions in flight: refill, answers independent of its size, streaming
results, resume after ``kill -9``, and the failures that must not look like results."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval.api.model import CachingLM

from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.harness.hf_model import SoftReasonLM
from lm_eval_softreason.trace import read_trace
from tests.helpers import ROOT, request

PROMPTS = [f"Q: Tom has {a} apples and buys {b} more. How many apples now?\nA:"
           for a, b in [(3, 4), (12, 5), (7, 7), (20, 1), (9, 30), (2, 2), (41, 8)]]
SVAMP_ROWS = [
    {"ID": f"chal-{i}", "Body": f"Tom has {a} apples. He buys {b} more.",
     "Question": "How many apples does he have now?", "Equation": f"( {a}.0 + {b}.0 )",
     "Answer": float(a + b), "Type": "Addition"}
    for i, (a, b) in enumerate([(3, 4), (12, 5), (7, 7), (20, 1), (9, 30), (2, 2)])
]


def test_refill_keeps_every_decode_batch_full_while_questions_wait(configure):
    lm = configure(max_active=3)
    candidate_calls: list[int] = []
    decode = lm.engine.decode

    def recording(rows, until, max_new):
        if max_new == 12:  # candidate rows; the verifier decodes with its own budget (8)
            candidate_calls.append(len({id(r.prompt) for r in rows}))
        return decode(rows, until, max_new)

    lm.engine.decode = recording
    try:
        lm.generate_until([request(p) for p in PROMPTS])
    finally:
        del lm.engine.decode
    seen = 0
    for n in candidate_calls:
        seen += n  # an upper bound on the questions started so far
        if seen < len(PROMPTS):
            assert n == 3, candidate_calls
    # questions really did finish at different rounds (otherwise this tests nothing)
    assert len(candidate_calls) > len(PROMPTS) // 3 + 1
    assert candidate_calls[:2] == [3, 3]


def test_answers_do_not_depend_on_the_window_size(configure):
    reqs = [request(p) for p in PROMPTS]
    answers = {m: configure(max_active=m).generate_until(reqs) for m in (1, 3, len(PROMPTS))}
    assert answers[1] == answers[3] == answers[len(PROMPTS)]
    assert len(set(answers[1])) > 1


def test_each_question_is_written_the_round_it_finishes(configure, tmp_path):
    """The trace line and the cache entry of a question exist before the call returns."""
    lm = configure(max_active=2, trace_path=str(tmp_path / "t.jsonl"))
    cached = CachingLM(lm, str(tmp_path / "cache.db"))
    seen_at_finish: list[tuple[int, int]] = []
    account = lm._account

    def spy(u, s):
        account(u, s)
        stored = sum(1 for k in cached.dbdict if not k.startswith("__lm_eval_softreason"))
        seen_at_finish.append((len(read_trace(tmp_path / "t.jsonl")), stored))

    lm._account = spy
    try:
        cached.generate_until([request(p) for p in PROMPTS[:4]])
    finally:
        del lm._account
    # the k-th question is traced while the call runs, and the (k-1) before it are cached
    assert seen_at_finish == [(1, 0), (2, 1), (3, 2), (4, 3)]


def test_phase_seconds_split_the_wall_time_by_phase(configure, monkeypatch):
    """A fake clock that moves only inside decode calls: 1 s per candidate call, 1000 s per
    verifier call. The phases must then read exactly those sums, and prefill and BO none."""
    import time as time_module

    lm = configure(max_active=3)
    clock, calls = [0.0], {12: 0, 8: 0}
    decode = lm.engine.decode

    def ticking(rows, until, max_new):
        calls[max_new] += 1
        clock[0] += {12: 1.0, 8: 1000.0}[max_new]
        return decode(rows, until, max_new)

    monkeypatch.setattr(time_module, "perf_counter", lambda: clock[0])
    lm.engine.decode = ticking
    try:
        lm.generate_until([request(p) for p in PROMPTS])
    finally:
        del lm.engine.decode
    stats = lm.get_model_info()["softreason_stats"]
    assert calls[12] > 0 and calls[8] > 0
    assert stats["decode_s"] == calls[12]
    assert stats["verify_s"] == 1000.0 * calls[8]
    assert stats["prefill_s"] == stats["propose_s"] == 0.0
    assert stats["wall_time_s"] == stats["decode_s"] + stats["verify_s"]


def test_max_active_is_validated():
    with pytest.raises(ConfigError, match=r"max_active='many' is not an integer; allowed: "
                                          r"'auto' or an integer >= 1"):
        SoftReasonLM(pretrained="unused", max_active="many")
    with pytest.raises(ConfigError, match="max_active=0 is out of range"):
        SoftReasonLM(pretrained="unused", max_active=0)


def _run(model: str, tmp: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tests.resumable_run", model, str(tmp / out),
           "--cache", str(tmp / "cache"), "--trace", str(tmp / "trace.jsonl"), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def svamp_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("svamp-data")
    (root / "svamp").mkdir()
    (root / "svamp" / "SVAMP.json").write_text(json.dumps(SVAMP_ROWS), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, svamp_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTREASON_DATA_DIR", str(svamp_data))
        done = _run(tiny_model_dir, tmp, "out.json")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp / "out.json").read_text())


@pytest.mark.slow
@pytest.mark.fault("kill -9, SIGTERM or SIGINT mid-run, then the same command with the same "
                   "--use_cache", "the uninterrupted run's samples and metrics; each question "
                   "traced once")
@pytest.mark.parametrize("kill, sig", [
    (["--kill-at-decode", "1"], signal.SIGKILL), (["--kill-after-traced", "1"], signal.SIGKILL),
    (["--kill-at-decode", "5"], signal.SIGKILL),
    (["--kill-after-traced", "1", "--signal", "TERM"], signal.SIGTERM),
    (["--kill-after-traced", "1", "--signal", "INT"], signal.SIGINT),
], ids=["mid-first-round", "traced-not-cached", "mid-run", "sigterm", "sigint"])
def test_kill_9_then_resume_gives_the_uninterrupted_results(tiny_model_dir, svamp_data,
                                                            uninterrupted, tmp_path, monkeypatch,
                                                            kill, sig):
    monkeypatch.setenv("SOFTREASON_DATA_DIR", str(svamp_data))
    killed = _run(tiny_model_dir, tmp_path, "never.json", *kill)
    assert killed.returncode == -sig, killed.stderr[-3000:]
    assert not (tmp_path / "never.json").exists()
    resumed = _run(tiny_model_dir, tmp_path, "out.json", "--max-active", "3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "out.json").read_text()) == uninterrupted
    questions = [r["question"] for r in read_trace(tmp_path / "trace.jsonl")]
    assert len(questions) == len(SVAMP_ROWS) == len(set(questions))
