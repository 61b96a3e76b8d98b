"""Questions that never wait for each other: each one runs its own rounds in its own thread.

For engines that serve many callers at once (the server engine: HTTP to servers that batch
continuously). A question sends its next round (candidates, verifier, BO step) the moment its
last one returns, so a long question never holds a short one back and the server's batch stays
full. A question's round is the lock-step runner's round of that question alone, and its rows,
seeds and BO steps depend only on that question, so answers are the same as lock-step ones.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Sequence

from tqdm import tqdm

from lm_eval_softreason.strategies.base import Strategy
from lm_eval_softreason.strategies.runner import Q, WindowedRunner, settle


class Stopped(Exception):
    """The run stopped (another question hit an error that ends it) before this one finished."""


class FreeRunner(WindowedRunner[Q]):
    """Runs up to ``max_active`` questions at once, each in its own thread; ``finish`` is
    called on the caller's thread as questions end. The engine, verifier and proposer must be
    thread-safe. Phase seconds are summed over questions (they overlap, so their sum can
    exceed the wall time). An error that ends the run (e.g. every server gone) stops the other
    questions at their next round; those that finish first are still handed to ``finish``."""

    def _drive(self, questions: Sequence[Q], start: Callable[[list[Q]], list[Strategy | None]],
               finish: Callable[[Q, Strategy | None], None], bar: tqdm) -> None:
        stop = threading.Event()
        error: BaseException | None = None
        with ThreadPoolExecutor(self.max_active, thread_name_prefix="softreason-q") as pool:
            pending: dict[Future, Q] = {
                pool.submit(self._answer, q, start, stop): q for q in questions}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        q = pending.pop(future)
                        if future.cancelled():
                            continue
                        exc = future.exception()
                        if exc is None:
                            finish(q, future.result())
                            bar.update(1)
                        elif not isinstance(exc, Stopped) and error is None:
                            error = exc
                            stop.set()
                            for f in pending:
                                f.cancel()
            except BaseException:  # e.g. Ctrl-C while waiting: stop the others, then leave
                stop.set()
                for f in pending:
                    f.cancel()
                raise
        if error is not None:
            raise error

    def _answer(self, q: Q, start: Callable[[list[Q]], list[Strategy | None]],
                stop: threading.Event) -> Strategy | None:
        """One question from start to its settled strategy (None: its prompt cannot run)."""
        if stop.is_set():
            raise Stopped
        (s,) = start([q])
        if s is None:
            return None
        while True:
            if s.done:
                s = settle(s)
                if s.done:
                    self.engine.release(s.ctx.state)
                    return s
            if stop.is_set():
                raise Stopped
            self.round([s])
