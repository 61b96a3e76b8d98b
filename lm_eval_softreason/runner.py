"""Lock-step execution: all questions of a ``generate_until`` call advance round by round.

Each round, the rows of every active question are decoded together (grouped only by stop
strings and token budget), then one batched verifier call covers every question that needs
one, then the questions' BO steps run together (in worker processes if ``bo_workers`` is set).
Questions that stop early simply contribute no rows. A failure is contained to the question
that caused it: that question falls back to greedy, the others carry on.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Callable, Sequence

from tqdm import tqdm

from lm_eval_softreason.bayesopt import Proposer
from lm_eval_softreason.decoding import BatchDecoder, DecodeResult, DecodeRow
from lm_eval_softreason.objectives import BatchVerifier, VerifyRequest
from lm_eval_softreason.selection import Generation
from lm_eval_softreason.strategy import Strategy

log = logging.getLogger(__name__)

TextFn = Callable[[list[int], Sequence[str]], str]


class LockstepRunner:
    def __init__(
        self,
        decoder: BatchDecoder,
        verifier: BatchVerifier | None,
        to_text: TextFn,
        token_spans: Callable[[list[int]], list[tuple[int, int]]],
        disable_tqdm: bool = False,
        proposer: Proposer | None = None,
    ) -> None:
        self.decoder = decoder
        self.proposer = proposer or Proposer()
        self.verifier = verifier
        self.to_text = to_text
        self.token_spans = token_spans
        self.disable_tqdm = disable_tqdm

    def run(self, strategies: Sequence[Strategy], desc: str = "softreason") -> None:
        """Drive every strategy until done; never raises for one question's failure."""
        bar = tqdm(total=len(strategies), desc=desc, disable=self.disable_tqdm)
        finished = sum(s.done for s in strategies)
        bar.update(finished)
        round_no = 0
        while True:
            active = [s for s in strategies if not s.done]
            if not active:
                break
            self._decode_round(active)
            self._verify_round([s for s in active if not s.done])
            self._propose_round([s for s in active if not s.done])
            round_no += 1
            now_done = sum(s.done for s in strategies)
            bar.set_postfix(round=round_no, active=len(strategies) - now_done,
                            tokens=sum(s.counters.tokens_generated for s in strategies))
            bar.update(now_done - finished)
            finished = now_done
        bar.close()

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
            flat = self.decoder.decode(rows, until, max_new)
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


def _fail(s: Strategy, stage: str, exc: BaseException) -> None:
    reason = f"{stage}: {type(exc).__name__}: {exc}"
    log.warning("question falls back to greedy (%s)", reason)
    s.fail(reason)
