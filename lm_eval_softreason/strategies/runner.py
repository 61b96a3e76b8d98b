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
T = TypeVar("T")
R = TypeVar("R")
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
        """Start questions with ``start`` (None for a question that cannot run) and hand
        each to ``finish`` once it is done, fallbacks already settled."""
        bar = tqdm(total=len(questions), desc=desc, unit="q", disable=self.disable_tqdm)
        try:
            self._drive(questions, start, finish, bar)
        finally:
            bar.close()

    def _drive(self, questions: Sequence[Q], start: Callable[[list[Q]], list[Strategy | None]],
               finish: Callable[[Q, Strategy | None], None], bar: tqdm) -> None:
        """Lock-step rounds: the questions that fit the free slots start with one ``start``
        call, every round covers every active question, and a question is finished the
        round it is done."""
        queue = deque(questions)
        window: list[tuple[Q, Strategy]] = []
        began, finished_tokens, round_no = time.perf_counter(), 0, 0
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
        for s, rows in _ask(active, lambda s: s.rows(), "proposing candidates"):
            groups[(s.ctx.until, s.ctx.max_new_tokens)].append((s, rows))
        for (until, max_new), members in groups.items():
            decoded = _isolated(members, self._decode_split(until, max_new), "decoding")
            _apply(decoded, lambda s, results: s.observe(
                [self._generation(s, r) for r in results]), "scoring candidates")

    def _decode_split(self, until: tuple[str, ...], max_new: int
                      ) -> Callable[[list[list[DecodeRow]]], list[list[DecodeResult]]]:
        """One engine call for several questions' rows; each gets its own results back."""
        def call(row_lists: list[list[DecodeRow]]) -> list[list[DecodeResult]]:
            flat = self.engine.decode([r for rows in row_lists for r in rows], until, max_new)
            out, i = [], 0
            for rows in row_lists:
                out.append(flat[i:i + len(rows)])
                i += len(rows)
            return out
        return call

    def _generation(self, s: Strategy, res: DecodeResult) -> Generation:
        text = self.to_text(res.tokens, s.ctx.until)
        return Generation(
            text=text, tokens=res.n_tokens, logprobs=res.logprobs, margins=res.margins,
            answer=s.ctx.extract(text),
            spans=self.token_spans(res.tokens) if s.needs_spans else [],
        )

    def _verify_round(self, active: Sequence[Strategy]) -> None:
        asking = _ask(active, lambda s: s.verify_request(), "building the verifier request")
        if not asking:
            return
        if self.verifier is None:
            raise RuntimeError("a strategy asked for a verifier but none is configured")
        _apply(_isolated(asking, self.verifier.verify_many, "verifying"),
               lambda s, r: s.observe_verification(r), "applying the verifier's rewards")

    def _propose_round(self, active: Sequence[Strategy]) -> None:
        asking = _ask(active, lambda s: s.proposal_request(), "building the BO step")
        if not asking:
            return
        try:
            results = self.proposer.map([req for _, req in asking])
        except Exception as exc:  # the pool itself failed, not one question's step
            for s, _ in asking:
                _fail(s, "proposing the next points", exc)
            return
        proposals = []
        for (s, _), result in zip(asking, results):
            if isinstance(result, Exception):  # e.g. GPFitError: this question falls back
                _fail(s, "proposing the next points", result)
            else:
                proposals.append((s, result))
        _apply(proposals, lambda s, p: s.observe_proposal(p), "applying the BO proposal")


def _ask(active: Sequence[Strategy], get: Callable[[Strategy], T | None],
         stage: str) -> list[tuple[Strategy, T]]:
    """Each strategy's ``get`` (None: it has nothing to ask); one that raises falls back."""
    out = []
    for s in active:
        try:
            item = get(s)
        except Exception as exc:
            _fail(s, stage, exc)
            continue
        if item is not None:
            out.append((s, item))
    return out


def _apply(pairs: list[tuple[Strategy, R]], use: Callable[[Strategy, R], None],
           stage: str) -> None:
    """Hand each strategy its result; one whose handling raises falls back."""
    for s, result in pairs:
        try:
            use(s, result)
        except Exception as exc:
            _fail(s, stage, exc)


def _isolated(members: list[tuple[Strategy, T]], call: Callable[[list[T]], list[R]],
              stage: str) -> list[tuple[Strategy, R]]:
    """``call`` on every member's item at once; if that fails, member by member, so that only
    a member that fails alone falls back (``stage`` names the step in its reason)."""
    try:
        results = call([item for _, item in members])
        if len(results) != len(members):
            raise ValueError(f"{stage}: {len(results)} results for {len(members)} questions")
        return [(s, r) for (s, _), r in zip(members, results)]
    except EngineUnavailable:
        raise  # nothing can run any more: no retries
    except Exception as exc:
        if len(members) == 1:
            _fail(members[0][0], stage, exc)
            return []
        log.warning("batched %s failed (%r); retrying question by question", stage, exc)
        return [pair for member in members for pair in _isolated([member], call, stage)]


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
