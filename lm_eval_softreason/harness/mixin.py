"""The lm-eval side of Soft Reasoning, whichever engine decodes: requests to answers.

``generate_until`` groups a call's requests into distinct questions, runs them through the
window of questions in flight (:mod:`lm_eval_softreason.strategies.runner`), streams each finished one to
the trace and the ``--use_cache`` database, and checks fallbacks at the end. The lm-eval model
classes (``model.py`` on Hugging Face, ``model_vllm.py`` on vLLM) mix this in and provide the
engine, the model's identity and prompt encoding; nothing here knows which engine it is.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from lm_eval.models.utils import (
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)

from lm_eval_softreason.strategies.softreason.bayesopt import Proposer
from lm_eval_softreason.strategies.baselines import CotDecoding, Fire, SelfConsistency
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.engines.base import Engine, PromptState
from lm_eval_softreason.errors import RunRefused, UserError
from lm_eval_softreason.scoring.extraction import get_answer_extractor
from lm_eval_softreason.scoring.objectives import (
    NoVerifier,
    as_batch_verifier,
    resolve_coherence,
    resolve_verifier_spec,
)
from lm_eval_softreason.harness.outputs import guard_cli_run
from lm_eval_softreason.strategies.runner import PHASES, WindowedRunner
from lm_eval_softreason.strategies.softreason.search import SoftReasonSearch
from lm_eval_softreason.settings import CACHE_CONFIG_KEY, prompt_sha
from lm_eval_softreason.strategies.base import Greedy, QuestionContext, Strategy
from lm_eval_softreason.trace import TraceWriter
from lm_eval_softreason.scoring.verifiers import MODEL_VERIFIERS
from lm_eval_softreason.writer_lock import WriterLock

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {
    "softreason": SoftReasonSearch,
    "greedy": Greedy,
    "sample": SelfConsistency,
    "fire": Fire,
    "cot_decoding": CotDecoding,
}
CACHE_SEARCHED_KEY = "__lm_eval_softreason_searched__"
# max_active=auto sizes the window for prompts of this many tokens (longer ones still run).
AUTO_WINDOW_PROMPT_TOKENS = 2048
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def _stripped(text: str) -> str | None:
    return text.strip() or None


@dataclass
class _Unique:
    """One distinct (context, gen_kwargs) of a call, and the request indices it answers."""

    context: str
    gen_kwargs: dict
    task_name: str
    indices: list[int]
    until: tuple[str, ...] = ()
    max_gen_toks: int = 0


@dataclass
class _CallTally:
    """Outcomes of one ``generate_until`` call, for the fallback checks at its end."""

    searched: int = 0
    fallbacks: list[str] = field(default_factory=list)


_EXIT_WARNINGS: list[str] = []


def _print_exit_warnings() -> None:
    """Repeat fallback warnings after lm-eval's results table, where a reader looks."""
    for text in _EXIT_WARNINGS:
        print(f"\n{'!' * 78}\n{text}\n{'!' * 78}", file=sys.stderr)


atexit.register(_print_exit_warnings)


class SoftReasonMixin:
    """Soft Reasoning's ``generate_until`` for an lm-eval ``LM``.

    The class mixing this in calls :meth:`_init_softreason` once its model is loaded and
    provides ``engine`` (an :class:`~lm_eval_softreason.engines.base.Engine`),
    :meth:`encode_prompt` and :meth:`row_batch_size`, plus ``pretrained``, ``revision`` and
    lm-eval's ``tok_decode``, ``eot_token_id``, ``max_length``, ``max_gen_toks`` and ``rank``.
    """

    engine: Engine
    sr_config: SoftReasonConfig

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
                self._guard_cache(db)
            except BaseException:
                lock.release()
                raise
            self._cache_lock = lock
        super().set_cache_hook(cache_hook)

    def _guard_cache(self, db: Any) -> None:
        """Check the settings a ``--use_cache`` database was written under against ours, and
        record ours in a new one."""
        mine = {**self.model_identity(), **self.sr_config.public_dict()}
        try:
            stored, size = db.get(CACHE_CONFIG_KEY), len(db)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"--use_cache database {db.filename} is not readable ({exc}); "
                            f"move it aside or choose another --use_cache path") from None
        if stored is None and size > 0:
            raise UserError(
                f"the --use_cache database {db.filename} already holds results of another "
                "model or strategy (it has no softreason configuration); give softreason its "
                "own --use_cache path"
            )
        if stored is not None and stored != mine:
            diff = {k: (stored.get(k), mine.get(k)) for k in sorted(set(stored) | set(mine))
                    if stored.get(k) != mine.get(k)}
            raise UserError(
                f"the --use_cache database {db.filename} holds results of a different "
                f"softreason configuration (differences, cached vs now: {diff}); use another "
                "--use_cache path per configuration"
            )
        db[CACHE_CONFIG_KEY] = mine

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
        call = _CallTally()

        def finish(u: _Unique, s: Strategy | None) -> None:
            if s is None:
                call.fallbacks.append("prompt could not be run")
                self._count_fallback("prompt could not be run")
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

        runner = WindowedRunner(
            self.engine, self.verifier if self.sr_config.mode == "softreason" else None,
            self._to_text, self._token_spans, max_active=self._max_active(),
            proposer=self._proposer, disable_tqdm=disable_tqdm or self.rank != 0,
        )
        runner.run(uniques, self._start, finish, desc=f"softreason[{self.sr_config.mode}]")
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
        """The most rows one question decodes in one round (its candidates, samples or
        branches; a ``single_*`` verifier sends one prompt per candidate, no more)."""
        cfg = self.sr_config
        return {"softreason": max(cfg.n_init, cfg.batch), "sample": cfg.n_samples,
                "fire": cfg.n_samples, "cot_decoding": cfg.top_k}.get(cfg.mode, 1)

    def _max_active(self) -> int:
        """Questions in flight. ``auto``: enough to fill one decode batch (rows per question
        from the mode), at most as many prompt states of ``AUTO_WINDOW_PROMPT_TOKENS`` tokens
        as fit in a quarter of free memory."""
        cfg = self.sr_config
        if cfg.max_active != "auto":
            return int(cfg.max_active)
        import psutil

        fill = max(1, self.row_batch_size() // self.rows_per_question())
        per_question = self.engine.state_bytes_per_token() * min(self.max_length,
                                                                 AUTO_WINDOW_PROMPT_TOKENS)
        fit = int(psutil.virtual_memory().available * 0.25 // max(1, per_question))
        size = max(1, min(fill, fit))
        log.info("max_active=auto: up to %d questions in flight", size)
        return size

    def _group(self, requests: list) -> list[_Unique]:
        """Distinct (context, gen_kwargs) of a call, with their stop strings and budgets;
        a budget the context cannot hold is refused here, before any work."""
        seen: dict[str, _Unique] = {}
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            key = context + "\x00" + json.dumps(gen_kwargs, sort_keys=True, default=str)
            if key not in seen:
                kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
                until = tuple(handle_stop_sequences(kwargs.pop("until", None), eos=eos))
                max_gen = int(kwargs.pop("max_gen_toks"))
                if max_gen >= self.max_length:
                    raise UserError(
                        f"max_gen_toks={max_gen} does not fit the model's context of "
                        f"max_length={self.max_length} tokens (no room is left for the prompt); "
                        f"lower max_gen_toks (--gen_kwargs or the task's generation_kwargs) "
                        f"or raise max_length (--model_args max_length=...)"
                    )
                seen[key] = _Unique(context, gen_kwargs, getattr(req, "task_name", "") or "",
                                    [], until, max_gen)
            seen[key].indices.append(i)
        return list(seen.values())

    @staticmethod
    def _question_key(u: _Unique, settings: str) -> str:
        """Hash of (prompt, gen_kwargs, a fingerprint of the settings)."""
        blob = "\x00".join([u.context, json.dumps(u.gen_kwargs, sort_keys=True, default=str),
                            settings])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _question_name(self, u: _Unique) -> str:
        """Names a question in traces: every setting that changes results counts, so runs
        that share a trace file never mistake each other's questions for their own."""
        return self._question_key(u, self.sr_config.fingerprint())[:16]

    def _seed(self, u: _Unique) -> int:
        """Per-question seed from the prompt and the settings that draw candidates (not the
        scoring ones, :meth:`SoftReasonConfig.search_fingerprint`), never from doc_id or rank,
        so results do not depend on --limit, sharding or request order."""
        return int(self._question_key(u, self.sr_config.search_fingerprint())[:16], 16) >> 1

    def _start(self, us: list[_Unique]) -> list[Strategy | None]:
        """Strategies of the questions joining the window, their prompts prefilled in one
        engine call; if that fails, one by one, and a prompt that cannot be run even alone
        gets None (answered with an empty string, logged)."""
        try:
            prepared = [self._encode(u) for u in us]
            states = self.engine.prefill_many([ids for ids, _ in prepared])
        except Exception as exc:
            if len(us) == 1:
                log.error("cannot run prompt %r...: %r; answering with an empty string",
                          us[0].context[:60], exc)
                return [None]
            return [s for u in us for s in self._start([u])]
        return [self._strategy(u, state, too_long)
                for u, state, (_, too_long) in zip(us, states, prepared)]

    def _encode(self, u: _Unique) -> tuple[list[int], str | None]:
        """The prompt's ids, cut to what fits beside the generation budget as HFLM's own
        greedy path does, and the fallback reason when it had to be cut."""
        max_ctx = self.max_length - u.max_gen_toks
        ids = self.encode_prompt(u.context)
        if len(ids) <= max_ctx:
            return ids, None
        return ids[-max_ctx:], (f"prompt longer than the context: {len(ids)} tokens, "
                                f"{max_ctx} fit beside max_gen_toks={u.max_gen_toks}")

    def _strategy(self, u: _Unique, state: PromptState, too_long: str | None) -> Strategy:
        ctx = QuestionContext(
            prompt=u.context, state=state, task_name=u.task_name,
            seed=self._seed(u), cfg=self.sr_config, coherence=self._coherence_fn,
            extract=self._extractor(u.task_name), embeddings=self.engine.input_embeddings(),
            embedding_std=self._embedding_std, until=u.until, max_new_tokens=u.max_gen_toks,
        )
        if too_long:
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

    def _account(self, u: _Unique, s: Strategy) -> None:
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

    def _stream_to_cache(self, u: _Unique, answer: str) -> None:
        """Write a searched answer to ``--use_cache`` now (lm-eval's ``CachingLM`` would
        only write after the whole call) and count it, for the fallback checks of a resumed
        run. Fallback answers are left to ``CachingLM``'s write at the end of a call that
        did not refuse its results."""
        self.cache_hook.add_partial("generate_until", (u.context, u.gen_kwargs), answer)
        db = getattr(self.cache_hook, "dbdict", None)
        if db is not None:
            db[CACHE_SEARCHED_KEY] = db.get(CACHE_SEARCHED_KEY, 0) + 1

    def _check_fallbacks(self, call: _CallTally) -> None:
        """Refuse a call whose every question fell back (its numbers would be greedy's under
        our name); warn loudly above ``max_fallback_rate``."""
        if not call.fallbacks:
            return
        total = call.searched + len(call.fallbacks)
        reasons = dict(Counter(r.split(":")[0] for r in call.fallbacks).most_common())
        db = getattr(self.cache_hook, "dbdict", None)
        earlier = db.get(CACHE_SEARCHED_KEY, 0) if db is not None else 0
        if not call.searched and not earlier:
            raise RunRefused(
                f"all {total} questions fell back to plain greedy decoding, so these would be "
                f"greedy's results under mode={self.sr_config.mode}; reasons: {reasons} (the "
                f"log has each error). Fix the cause and rerun."
            )
        rate = len(call.fallbacks) / total
        if rate > self.sr_config.max_fallback_rate:
            text = (f"softreason: {len(call.fallbacks)} of {total} questions "
                    f"({rate:.0%}) fell back to plain greedy decoding, more than "
                    f"max_fallback_rate={self.sr_config.max_fallback_rate:g}; reasons: {reasons}. "
                    f"These results are partly greedy's.")
            log.warning(text)
            self._warnings.append(text)
            _EXIT_WARNINGS.append(text)

    def _count_fallback(self, reason: str) -> None:
        self._stats["fallbacks"] += 1
        key = reason.split(":")[0]
        self._fallback_reasons[key] = self._fallback_reasons.get(key, 0) + 1

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


def weights_fingerprint(pretrained: Any) -> str | None:
    """The sha256 of every weight file of a local model folder, with their names, hashed
    together: a model rebuilt in place (another seed, a fine-tune) gets a new fingerprint even
    at the same file sizes. None for a Hub id (its revision is in the identity instead) or an
    in-memory model. Each file is hashed once per (path, size, mtime); see :func:`file_sha256`."""
    if not isinstance(pretrained, (str, os.PathLike)) or not Path(pretrained).is_dir():
        return None
    files = sorted((str(p.relative_to(pretrained)), file_sha256(p))
                   for p in Path(pretrained).rglob("*") if p.suffix in WEIGHT_SUFFIXES)
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """A file's sha256, remembered in ``$XDG_CACHE_HOME/lm_eval_softreason/sha256.json`` under
    its absolute path, size and mtime, so a large checkpoint is read in full only when it
    changed. A cache that cannot be read or written is only a cost, never an error."""
    stat = path.stat()
    key = f"{path.resolve()}\x00{stat.st_size}\x00{stat.st_mtime_ns}"
    store = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                 "lm_eval_softreason", "sha256.json")
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    known = known if isinstance(known, dict) else {}
    known[key] = digest.hexdigest()
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f"{store.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, store)
    except OSError:
        pass
    return known[key]


def refuse_unsharded_processes(world_size: int) -> None:
    """``torchrun``/``accelerate launch`` with N processes, where lm-eval did not shard the
    requests (HFLM shards only across GPUs): every process would run every question."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and world_size != launched:
        raise RunRefused(
            f"launched as {launched} processes (WORLD_SIZE={launched}), but lm-eval split the "
            f"requests over {world_size} (it shards only across GPUs, one per process), so "
            f"each process would run every question. Run a single process (batch_size and "
            f"max_active set the parallelism), or launch one process per GPU."
        )
