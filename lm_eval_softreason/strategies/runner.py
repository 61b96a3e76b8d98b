"""The window of questions in flight: at most ``max_active`` at once, refilled as they finish.

Every round decodes the rows of all active questions together, so batches stay full while
memory is bounded by the window, not the run; a failing question alone falls back to greedy.
Round structure and phase timings: docs/architecture.md, "The window of questions".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from tqdm import tqdm

from lm_eval_softreason.strategies.softreason.bayesopt import Proposer
from lm_eval_softreason.engines.base import DecodeResult, DecodeRow, Engine, EngineUnavailable
from lm_eval_softreason.scoring.verification import BatchVerifier, VerifyRequest
from lm_eval_softreason.scoring.candidate import Generation
from lm_eval_softreason.strategies.base import Greedy, Strategy
from lm_eval_softreason.strategies.fallback import Fallback

log = logging.getLogger(__name__)

TextFn = Callable[[list[int], Sequence[str]], str]
Q = TypeVar("Q")
PHASES = ("prefill", "decode", "verify", "propose")


class WindowedRunner(Generic[Q]):
    """Drives questions through a bounded window; never raises for one question's failure."""

    def __init__(
        self,
        engine: Engine,
        verifier: BatchVerifier | None,
        to_text: TextFn,
        token_spans: Callable[[list[int]], list[tuple[int, int]]],
        max_active: int,
        proposer: Proposer | None = None,
        disable_tqdm: bool = False,
    ) -> None:
        if max_active < 1:
            raise ValueError(f"max_active={max_active} must be >= 1")
        self.engine = engine
        self.verifier = verifier
        self.to_text = to_text
        self.token_spans = token_spans
        self.max_active = max_active
        self.proposer = proposer or Proposer()
        self.disable_tqdm = disable_tqdm
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._seconds_lock = threading.Lock()

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._seconds_lock:
                self.seconds[phase] += time.perf_counter() - t0

    def run(
        self,
        questions: Sequence[Q],
        start: Callable[[list[Q]], list[Strategy | None]],
        finish: Callable[[Q, Strategy | None], None],
        desc: str = "softreason",
    ) -> None:
        """Start the questions that fit the free slots with one ``start`` call (None for a
        question that cannot run), and hand each to ``finish`` the round it is done,
        fallbacks already settled."""
        queue = deque(questions)
        window: list[tuple[Q, Strategy]] = []
        bar = tqdm(total=len(questions), desc=desc, unit="q", disable=self.disable_tqdm)
        began, finished_tokens, round_no = time.perf_counter(), 0, 0
        try:
            while queue or window:
                while queue and len(window) < self.max_active:
                    joining = [queue.popleft()
                               for _ in range(min(len(queue), self.max_active - len(window)))]
                    with self._timed("prefill"):
                        started = start(joining)
                    for q, s in zip(joining, started):
                        if s is None:
                            finish(q, None)
                            bar.update(1)
                        else:
                            window.append((q, s))
                if not window:
                    continue
                self.round([s for _, s in window if not s.done])
                round_no += 1
                still = []
                for q, s in window:
                    if s.done:
                        s = settle(s)
                    if s.done:
                        finished_tokens += s.counters.tokens_generated
                        self.engine.release(s.ctx.state)
                        finish(q, s)
                        bar.update(1)
                    else:
                        still.append((q, s))
                window = still
                tokens = finished_tokens + sum(s.counters.tokens_generated for _, s in window)
                bar.set_postfix(active=len(window), round=round_no,
                                tok_s=f"{tokens / (time.perf_counter() - began):.1f}")
        finally:
            bar.close()

    def round(self, active: Sequence[Strategy]) -> None:
        """One round of every active question: decode, verify, propose."""
        with self._timed("decode"):
            self._decode_round(active)
        with self._timed("verify"):
            self._verify_round([s for s in active if not s.done])
        with self._timed("propose"):
            self._propose_round([s for s in active if not s.done])

    def _decode_round(self, active: Sequence[Strategy]) -> None:
        groups: dict[tuple, list[tuple[Strategy, list[DecodeRow]]]] = defaultdict(list)
        for s in active:
            try:
                rows = s.rows()
            except Exception as exc:
                _fail(s, "proposing candidates", exc)
                continue
            groups[(s.ctx.until, s.ctx.max_new_tokens)].append((s, rows))
        for (until, max_new), members in groups.items():
            outputs = self._decode_isolated(members, until, max_new)
            for s, results in outputs:
                try:
                    s.observe([self._generation(s, r) for r in results])
                except Exception as exc:
                    _fail(s, "scoring candidates", exc)

    def _decode_isolated(self, members, until, max_new):  # type: ignore[no-untyped-def]
        """Decode all members' rows together; if that fails, retry question by question."""
        rows = [r for _, rs in members for r in rs]
        try:
            flat = self.engine.decode(rows, until, max_new)
        except Exception as exc:
            if len(members) == 1:
                _fail(members[0][0], "decoding", exc)
                return []
            log.warning("batched decoding failed (%r); retrying question by question", exc)
            out = []
            for member in members:
                out.extend(self._decode_isolated([member], until, max_new))
            return out
        out, i = [], 0
        for s, rs in members:
            out.append((s, flat[i:i + len(rs)]))
            i += len(rs)
        return out

    def _generation(self, s: Strategy, res: DecodeResult) -> Generation:
        text = self.to_text(res.tokens, s.ctx.until)
        return Generation(
            text=text, tokens=res.n_tokens, logprobs=res.logprobs, margins=res.margins,
            answer=s.ctx.extract(text),
            spans=self.token_spans(res.tokens) if s.needs_spans else [],
        )

    def _verify_round(self, active: Sequence[Strategy]) -> None:
        asking: list[tuple[Strategy, VerifyRequest]] = []
        for s in active:
            try:
                req = s.verify_request()
            except Exception as exc:
                _fail(s, "building the verifier request", exc)
                continue
            if req is not None:
                asking.append((s, req))
        if not asking:
            return
        if self.verifier is None:
            raise RuntimeError("a strategy asked for a verifier but none is configured")
        for s, result in self._verify_isolated(asking):
            try:
                s.observe_verification(result)
            except Exception as exc:
                _fail(s, "applying the verifier's rewards", exc)

    def _verify_isolated(self, asking):  # type: ignore[no-untyped-def]
        assert self.verifier is not None
        try:
            results = self.verifier.verify_many([req for _, req in asking])
            if len(results) != len(asking):
                raise ValueError(f"verifier returned {len(results)} results for "
                                 f"{len(asking)} questions")
            return list(zip([s for s, _ in asking], results))
        except Exception as exc:
            if len(asking) == 1:
                _fail(asking[0][0], "verifying", exc)
                return []
            out = []
            for item in asking:
                out.extend(self._verify_isolated([item]))
            return out

    def _propose_round(self, active: Sequence[Strategy]) -> None:
        asking = []
        for s in active:
            req = s.proposal_request()
            if req is not None:
                asking.append((s, req))
        if not asking:
            return
        try:
            results = self.proposer.map([req for _, req in asking])
        except Exception as exc:  # the pool itself failed, not one question's step
            for s, _ in asking:
                _fail(s, "proposing the next points", exc)
            return
        for (s, _), result in zip(asking, results):
            if isinstance(result, Exception):  # e.g. GPFitError: this question falls back
                _fail(s, "proposing the next points", result)
            else:
                try:
                    s.observe_proposal(result)
                except Exception as exc:
                    _fail(s, "applying the BO proposal", exc)


def settle(s: Strategy) -> Strategy:
    """A finished strategy, or the greedy fallback that must run in its place.

    A search that failed, or whose answer is empty, is redone with plain greedy on the same
    prompt state; a strategy that already is that greedy (or failed as greedy) is final.
    """
    if s.fallback is None and not isinstance(s, Greedy) and s.generations \
            and not s.ranked()[0].text.strip():
        s.fallback = Fallback("empty generation")
    if s.fallback is None or (isinstance(s, Greedy) and (s.generations or s.is_fallback)):
        return s  # done, or the fallback itself failed: nothing more to try
    g = Greedy(s.ctx)
    g.counters = s.counters
    g.fallback = s.fallback
    g.stop_reason = "fallback"
    g.is_fallback = True
    return g


def _fail(s: Strategy, stage: str, exc: BaseException) -> None:
    """The question falls back to greedy; an engine that cannot run anything ends the run."""
    if isinstance(exc, EngineUnavailable):
        raise exc
    reason = Fallback.of(stage, exc)
    log.warning("question falls back to greedy (%s)", reason)
    s.fail(reason)
