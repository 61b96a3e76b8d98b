"""The lm-eval side of Soft Reasoning, whichever engine decodes: requests to answers.

``generate_until`` groups a call's requests into distinct questions, runs them through the
window of questions in flight (:mod:`lm_eval_softreason.strategies.runner`), streams each finished one to
the trace and the ``--use_cache`` database, and checks fallbacks at the end. The lm-eval model
classes (``hf_model.py``, ``vllm_model.py``) mix this in and provide the engine, the model's
identity and prompt encoding; nothing here knows which engine it is.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import torch
from lm_eval.models.utils import handle_stop_sequences, postprocess_generated_text

from lm_eval_softreason.engines.base import Engine, EngineUnavailable, PromptState
from lm_eval_softreason.harness.cache_guard import (
    CACHE_SEARCHED_KEY,
    guard_cache,
    weights_fingerprint,
)
from lm_eval_softreason.harness.fallbacks import (
    CallTally,
    check_fallbacks,
    install_exit_warnings,
)
from lm_eval_softreason.harness.outputs import guard_cli_run
from lm_eval_softreason.harness.requests import UniqueRequest, group_requests, question_key
from lm_eval_softreason.harness.window import window_size
from lm_eval_softreason.scoring.coherence import resolve_coherence
from lm_eval_softreason.scoring.extraction import get_answer_extractor
from lm_eval_softreason.scoring.verification import (
    NoVerifier,
    as_batch_verifier,
    resolve_verifier_spec,
)
from lm_eval_softreason.scoring.verifiers import MODEL_VERIFIERS
from lm_eval_softreason.settings import prompt_sha
from lm_eval_softreason.strategies.base import Greedy, QuestionContext, Strategy
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.strategies.fallback import PROMPT_NOT_RUN, Fallback
from lm_eval_softreason.strategies.modes import STRATEGIES
from lm_eval_softreason.strategies.free_runner import FreeRunner
from lm_eval_softreason.strategies.runner import PHASES, WindowedRunner
from lm_eval_softreason.strategies.softreason.bayesopt import Proposer
from lm_eval_softreason.trace import TraceWriter
from lm_eval_softreason.writer_lock import WriterLock

log = logging.getLogger(__name__)

def _stripped(text: str) -> str | None:
    return text.strip() or None


class SoftReasonMixin:
    """Soft Reasoning's ``generate_until`` for an lm-eval ``LM``.

    The class mixing this in calls :meth:`_init_softreason` once its model is loaded and
    provides ``engine`` (an :class:`~lm_eval_softreason.engines.base.Engine`),
    :meth:`encode_prompt` and :meth:`row_batch_size`, plus ``pretrained``, ``revision`` and
    lm-eval's ``tok_decode``, ``eot_token_id``, ``max_length``, ``max_gen_toks`` and ``rank``.
    """

    engine: Engine
    sr_config: SoftReasonConfig
    free_running = False  # questions in their own threads (FreeRunner): thread-safe engines

    def _init_softreason(self, cfg: SoftReasonConfig) -> None:
        """State of the search side; ``_apply_config`` ran before the model was loaded."""
        self._stats: dict[str, float] = {
            "questions": 0, "fallbacks": 0, "rounds": 0, "candidates": 0,
            "tokens_generated": 0, "tokens_prefilled": 0, "verifier_tokens": 0,
            "wall_time_s": 0.0, **{f"{phase}_s": 0.0 for phase in PHASES},
        }
        self._fallback_reasons: dict[str, int] = {}
        self._warnings: list[str] = []
        self._extractors: dict[str, Callable[[str], str | None]] = {}
        table = self.engine.input_embeddings()
        self._embedding_std = float(table.float().std(dim=0).mean())
        install_exit_warnings()

    def model_identity(self) -> dict[str, Any]:
        """Everything about the loaded model that changes outputs (for the cache guard): path
        or id, revision, dtype, context length and the weight files' contents."""
        return {
            "model": str(self.pretrained),
            "revision": self.revision,
            "dtype": str(self.engine.dtype).removeprefix("torch."),
            "max_length": self.max_length,
            "weights": weights_fingerprint(self.pretrained),
        }

    def encode_prompt(self, context: str) -> list[int]:
        """The prompt's token ids, as the engine's stock lm-eval model would encode them."""
        raise NotImplementedError

    def row_batch_size(self) -> int:
        """Rows worth decoding in one engine call (sizes ``max_active=auto``)."""
        raise NotImplementedError

    def configure(self, **model_args: Any) -> None:
        """Switch strategy settings on the loaded model (e.g. to compare strategies without
        reloading it); statistics restart. Only our own model_args are accepted here."""
        cfg, rest = SoftReasonConfig.from_kwargs(model_args)
        if rest:
            raise ValueError(f"configure() takes softreason model_args only, not {sorted(rest)}")
        self._apply_config(cfg)
        self.reset_stats()

    def close_trace(self) -> None:
        """Close the trace file, if one is open, so that another run may write it."""
        trace = getattr(self, "_trace", None)
        if trace is not None:
            trace.close()
        self._trace = None

    def reset_stats(self) -> None:
        """Zero the totals reported in ``get_model_info()["softreason_stats"]``."""
        self._stats = {key: type(value)(0) for key, value in self._stats.items()}
        self._fallback_reasons = {}
        self._warnings = []

    def _apply_config(self, cfg: SoftReasonConfig) -> None:
        """Validate and resolve everything a configuration names, and where an lm-eval CLI
        run will write its results, before any model work."""
        guard_cli_run(cfg.trace_path)
        self._coherence_fn = resolve_coherence(cfg.coherence)
        self._verifier_spec = resolve_verifier_spec(cfg.verifier)
        self.sr_config = cfg
        self._verifier = None
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        old = getattr(self, "_proposer", None)
        if old is None or old.workers != cfg.bo_workers:
            if old is not None:
                old.close()
            self._proposer = Proposer(cfg.bo_workers)
        # Opened (and locked) here, before the model loads: a trace another run is writing
        # is refused at start.
        self.close_trace()
        self._trace = TraceWriter(cfg.trace_path) if cfg.trace_path is not None else None

    def set_cache_hook(self, cache_hook: Any) -> None:
        """Refuse a ``--use_cache`` database written under another configuration, or that
        another process is writing; hold it locked until another hook replaces this one.

        lm-eval keys its cache on (prompt, gen_kwargs) only, so without this a result searched
        under one configuration (or by ``--model hf``) would be served for another.
        """
        lock = getattr(self, "_cache_lock", None)
        if lock is not None:
            lock.release()
        self._cache_lock = None
        db = getattr(cache_hook, "dbdict", None)
        if db is not None:
            lock = WriterLock(db.filename, "--use_cache database")
            try:
                guard_cache(db, {**self.model_identity(), **self.sr_config.public_dict()})
            except BaseException:
                lock.release()
                raise
            self._cache_lock = lock
        super().set_cache_hook(cache_hook)

    def get_model_info(self) -> dict:
        parent = getattr(super(), "get_model_info", None)
        info = parent() if parent is not None else {}
        info["softreason"] = self.sr_config.public_dict()
        info["softreason_stats"] = {**self._stats, "fallback_reasons": self._fallback_reasons,
                                    "warnings": list(self._warnings)}
        return info

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Search every distinct request through a bounded window of questions in flight.

        Each question's answer is streamed to the trace and the ``--use_cache`` database the
        round it finishes, so an interrupted run loses only the questions in flight.
        """
        uniques = self._group(requests)
        started = time.perf_counter()
        out: list[str] = [""] * len(requests)
        call = CallTally()

        def finish(u: UniqueRequest, s: Strategy | None) -> None:
            if s is None:
                call.fallbacks.append(PROMPT_NOT_RUN)
                self._count_fallback(PROMPT_NOT_RUN)
                return
            texts = [g.text for g in s.ranked()] or [""]
            for j, i in enumerate(u.indices):
                out[i] = texts[j % len(texts)]
            self._account(u, s)
            if s.fallback is None:
                call.searched += 1
                self._stream_to_cache(u, out[u.indices[0]])
            else:
                call.fallbacks.append(s.fallback)

        for u in uniques:  # looked up here, not in the free runner's threads
            self._extractor(u.task_name)
        runner = (FreeRunner if self.free_running else WindowedRunner)(
            self.engine, self.verifier if STRATEGIES[self.sr_config.mode].needs_verifier else None,
            self._to_text, self._token_spans, max_active=self._max_active(),
            proposer=self._proposer, disable_tqdm=disable_tqdm or self.rank != 0,
        )
        try:
            runner.run(uniques, self._start, finish, desc=f"softreason[{self.sr_config.mode}]")
        except EngineUnavailable as exc:
            raise EngineUnavailable(
                f"{exc}; the run stopped after {call.searched} searched questions of "
                f"{len(uniques)}: those are in the --use_cache database and the trace (when "
                "given), so the same command resumes once the servers are back") from exc
        self._stats["wall_time_s"] += time.perf_counter() - started
        for phase, seconds in runner.seconds.items():
            self._stats[f"{phase}_s"] += seconds
        self._check_fallbacks(call)
        return out

    @property
    def verifier(self):  # type: ignore[no-untyped-def]
        if self._verifier is None:
            spec = self._verifier_spec
            if isinstance(spec, str) and spec in MODEL_VERIFIERS:
                eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
                self._verifier = MODEL_VERIFIERS[spec](
                    self.engine, self._extractor,
                    self.sr_config.verifier_max_tokens, stop=handle_stop_sequences(None, eos),
                )
            elif spec == "none":
                self._verifier = NoVerifier()
            else:
                self._verifier = as_batch_verifier(spec)
        return self._verifier

    def rows_per_question(self) -> int:
        """The most rows one question decodes in one round."""
        return STRATEGIES[self.sr_config.mode].rows_per_question(self.sr_config)

    def _max_active(self) -> int:
        """Questions in flight (:func:`~lm_eval_softreason.harness.window.window_size`)."""
        return window_size(self.sr_config, self.row_batch_size(),
                           self.engine.state_bytes_per_token(), self.max_length)

    def _group(self, requests: list) -> list[UniqueRequest]:
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        return group_requests(requests, eos, self.max_gen_toks, self.max_length)

    def _question_name(self, u: UniqueRequest) -> str:
        """Names a question in traces: every setting that changes results counts, so runs
        that share a trace file never mistake each other's questions for their own."""
        return question_key(u, self.sr_config.fingerprint())[:16]

    def _seed(self, u: UniqueRequest) -> int:
        """Per-question seed from the prompt and the settings that draw candidates (not the
        scoring ones, :meth:`SoftReasonConfig.search_fingerprint`), never from doc_id or rank,
        so results do not depend on --limit, sharding or request order."""
        return int(question_key(u, self.sr_config.search_fingerprint())[:16], 16) >> 1

    def _start(self, us: list[UniqueRequest]) -> list[Strategy | None]:
        """Strategies of the questions joining the window, their prompts prefilled in one
        engine call; if that fails, one by one, and a prompt that cannot be run even alone
        gets None (answered with an empty string, logged)."""
        try:
            prepared = [self._encode(u) for u in us]
            states = self.engine.prefill_many([ids for ids, _ in prepared])
        except EngineUnavailable:
            raise
        except Exception as exc:
            if len(us) == 1:
                log.error("cannot run prompt %r...: %r; answering with an empty string",
                          us[0].context[:60], exc)
                return [None]
            return [s for u in us for s in self._start([u])]
        return [self._strategy(u, state, too_long)
                for u, state, (_, too_long) in zip(us, states, prepared)]

    def _encode(self, u: UniqueRequest) -> tuple[list[int], Fallback | None]:
        """The prompt's ids, cut to what fits beside the generation budget as HFLM's own
        greedy path does, and the fallback reason when it had to be cut."""
        max_ctx = self.max_length - u.max_gen_toks
        ids = self.encode_prompt(u.context)
        if len(ids) <= max_ctx:
            return ids, None
        return ids[-max_ctx:], Fallback("prompt longer than the context",
                                         message=f"{len(ids)} tokens, {max_ctx} fit beside "
                                                 f"max_gen_toks={u.max_gen_toks}")

    def _strategy(self, u: UniqueRequest, state: PromptState,
                  too_long: Fallback | None) -> Strategy:
        ctx = QuestionContext(
            prompt=u.context, state=state, task_name=u.task_name,
            seed=self._seed(u), cfg=self.sr_config, coherence=self._coherence_fn,
            extract=self._extractor(u.task_name), embeddings=self.engine.input_embeddings(),
            embedding_std=self._embedding_std, until=u.until, max_new_tokens=u.max_gen_toks,
        )
        if too_long is not None:
            s: Strategy = Greedy(ctx)
            s.fallback = too_long
            return s
        return STRATEGIES[self.sr_config.mode](ctx)

    def _extractor(self, task_name: str) -> Callable[[str], str | None]:
        """The task's own answer filters; tasks we cannot look up compare stripped text."""
        if task_name not in self._extractors:
            try:
                self._extractors[task_name] = get_answer_extractor(task_name)
            except Exception as exc:
                log.warning("no answer filters for task %r (%s); comparing stripped text",
                            task_name, exc)
                self._extractors[task_name] = _stripped
        return self._extractors[task_name]

    def _account(self, u: UniqueRequest, s: Strategy) -> None:
        st = self._stats
        st["questions"] += 1
        st["rounds"] += s.counters.rounds
        st["candidates"] += len(s.generations)
        st["tokens_generated"] += s.counters.tokens_generated
        st["tokens_prefilled"] += s.counters.tokens_prefilled
        st["verifier_tokens"] += s.counters.verifier_tokens
        if s.fallback is not None:
            self._count_fallback(s.fallback)
        if self._trace is not None:
            record = s.trace()
            record["question"] = self._question_name(u)
            record["prompt_sha"] = prompt_sha(s.ctx.prompt)
            record["config"] = self.sr_config.fingerprint()
            self._trace.write(record)

    def _stream_to_cache(self, u: UniqueRequest, answer: str) -> None:
        """Write a searched answer to ``--use_cache`` now (lm-eval's ``CachingLM`` would
        only write after the whole call) and count it, for the fallback checks of a resumed
        run. Fallback answers are left to ``CachingLM``'s write at the end of a call that
        did not refuse its results."""
        self.cache_hook.add_partial("generate_until", (u.context, u.gen_kwargs), answer)
        db = getattr(self.cache_hook, "dbdict", None)
        if db is not None:
            db[CACHE_SEARCHED_KEY] = db.get(CACHE_SEARCHED_KEY, 0) + 1

    def _check_fallbacks(self, call: CallTally) -> None:
        db = getattr(self.cache_hook, "dbdict", None)
        earlier = db.get(CACHE_SEARCHED_KEY, 0) if db is not None else 0
        text = check_fallbacks(call, earlier, self.sr_config.mode,
                               self.sr_config.max_fallback_rate)
        if text is not None:
            log.warning(text)
            self._warnings.append(text)

    def _count_fallback(self, reason: Fallback) -> None:
        self._stats["fallbacks"] += 1
        self._fallback_reasons[reason.stage] = self._fallback_reasons.get(reason.stage, 0) + 1

    def _to_text(self, tokens: list[int], until) -> str:  # type: ignore[no-untyped-def]
        text = self.tok_decode(tokens)
        think = getattr(self, "think_end_token", None)
        think = think if isinstance(think, str) else None
        return postprocess_generated_text(generation=text, stop=list(until),
                                          think_end_token=think)

    def _token_spans(self, tokens: list[int]) -> list[tuple[int, int]]:
        spans, prev = [], 0
        for i in range(len(tokens)):
            end = len(self.tok_decode(tokens[: i + 1]))
            spans.append((prev, end))
            prev = end
        return spans

