"""``--model softreason``: an ``HFLM`` whose ``generate_until`` runs a per-question search.

Loading, tokenisation, chat templates, ``loglikelihood*`` and batch-size handling are all
inherited from lm-eval's ``HFLM``; only ``generate_until`` changes. Requests of one call are
deduplicated (``repeats`` share one search), prefilled once, and searched in lock-step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import (
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)

from lm_eval_softreason.bayesopt import Proposer
from lm_eval_softreason.baselines import CotDecoding, Fire, SelfConsistency
from lm_eval_softreason.config import SoftReasonConfig
from lm_eval_softreason.decoding import BatchDecoder, prefill
from lm_eval_softreason.extraction import get_answer_extractor
from lm_eval_softreason.objectives import (
    NoVerifier,
    as_batch_verifier,
    resolve_coherence,
    resolve_verifier_spec,
)
from lm_eval_softreason.runner import LockstepRunner
from lm_eval_softreason.search import SoftReasonSearch
from lm_eval_softreason.strategy import Greedy, QuestionContext, Strategy
from lm_eval_softreason.trace import TraceWriter
from lm_eval_softreason.verifier import SelfVerifier

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Strategy]] = {
    "softreason": SoftReasonSearch,
    "greedy": Greedy,
    "sample": SelfConsistency,
    "fire": Fire,
    "cot_decoding": CotDecoding,
}
CACHE_CONFIG_KEY = "__lm_eval_softreason_config__"
AUTO_BATCH_CAP = 64


def _stripped(text: str) -> str | None:
    return text.strip() or None


@dataclass
class _Unique:
    """One distinct (context, gen_kwargs) of a call, and the request indices it answers."""

    context: str
    gen_kwargs: dict
    task_name: str
    indices: list[int]


@register_model("softreason")
class SoftReasonLM(HFLM):
    """HFLM with Soft Reasoning (or a baseline, by ``mode``) in ``generate_until``.

    Our model_args (see README for each) are split off before ``HFLM.__init__`` so they never
    reach ``from_pretrained``; all of them are validated before the model is loaded.
    """

    def __init__(self, **kwargs: Any) -> None:
        cfg, rest = SoftReasonConfig.from_kwargs(kwargs)
        self._apply_config(cfg)
        super().__init__(**rest)
        self._model.eval()
        table = self._model.get_input_embeddings().weight.detach()
        self._embedding_std = float(table.float().std(dim=0).mean())
        self._trace = TraceWriter(cfg.trace_path) if cfg.trace_path else None
        self._stats: dict[str, float] = {
            "questions": 0, "fallbacks": 0, "rounds": 0, "candidates": 0,
            "tokens_generated": 0, "tokens_prefilled": 0, "verifier_tokens": 0,
            "wall_time_s": 0.0,
        }
        self._fallback_reasons: dict[str, int] = {}
        self._decoder: BatchDecoder | None = None
        self._extractors: dict[str, Callable[[str], str | None]] = {}

    def configure(self, **model_args: Any) -> None:
        """Switch strategy settings on the loaded model (e.g. to compare strategies without
        reloading it); statistics restart. Only our own model_args are accepted here."""
        cfg, rest = SoftReasonConfig.from_kwargs(model_args)
        if rest:
            raise ValueError(f"configure() takes softreason model_args only, not {sorted(rest)}")
        self._apply_config(cfg)
        if self._trace is not None:
            self._trace.close()
        self._trace = TraceWriter(cfg.trace_path) if cfg.trace_path else None
        self.reset_stats()

    def reset_stats(self) -> None:
        """Zero the totals reported in ``get_model_info()["softreason_stats"]``."""
        self._stats = {key: type(value)(0) for key, value in self._stats.items()}
        self._fallback_reasons = {}

    def _apply_config(self, cfg: SoftReasonConfig) -> None:
        """Validate and resolve everything a configuration names, before any model work."""
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

    # --- lm-eval hooks ----------------------------------------------------------------------

    def set_cache_hook(self, cache_hook: Any) -> None:
        """Refuse a ``--use_cache`` database written under another configuration.

        lm-eval keys its cache on (prompt, gen_kwargs) only, so without this a result searched
        under one configuration (or by ``--model hf``) would be served for another.
        """
        db = getattr(cache_hook, "dbdict", None)
        if db is not None:
            mine = {"model": str(self.pretrained), **self.sr_config.public_dict()}
            stored = db.get(CACHE_CONFIG_KEY)
            if stored is None and len(db) > 0:
                raise ValueError(
                    "this --use_cache database already holds results of another model or "
                    "strategy (it has no softreason configuration); give softreason its own "
                    "--use_cache path"
                )
            if stored is not None and stored != mine:
                diff = {k: (stored.get(k), mine.get(k)) for k in sorted(set(stored) | set(mine))
                        if stored.get(k) != mine.get(k)}
                raise ValueError(
                    "this --use_cache database holds results of a different softreason "
                    f"configuration (differences, cached vs now: {diff}); use another "
                    "--use_cache path per configuration"
                )
            db[CACHE_CONFIG_KEY] = mine
        super().set_cache_hook(cache_hook)

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        info["softreason"] = self.sr_config.public_dict()
        info["softreason_stats"] = {**self._stats, "fallback_reasons": self._fallback_reasons}
        return info

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        uniques = self._group(requests)
        started = time.perf_counter()
        built = [self._strategy(u) for u in uniques]
        strategies = [s for s in built if s is not None]
        runner = LockstepRunner(
            self.decoder, self.verifier if self.sr_config.mode == "softreason" else None,
            self._to_text, self._token_spans, disable_tqdm=disable_tqdm or self.rank != 0,
            proposer=self._proposer,
        )
        runner.run(strategies, desc=f"softreason[{self.sr_config.mode}]")
        final = iter(self._fall_back(strategies, runner))

        out: list[str] = [""] * len(requests)
        for u, s in zip(uniques, built):
            if s is None:
                self._count_fallback("prompt could not be run")
                continue
            s = next(final)
            texts = [g.text for g in s.ranked()] or [""]
            for j, i in enumerate(u.indices):
                out[i] = texts[j % len(texts)]
            self.cache_hook.add_partial("generate_until", (u.context, u.gen_kwargs),
                                        out[u.indices[0]])
            self._account(s)
        self._stats["wall_time_s"] += time.perf_counter() - started
        return out

    # --- pieces ------------------------------------------------------------------------------

    @property
    def decoder(self) -> BatchDecoder:
        if self._decoder is None:
            eos = {self.eot_token_id}
            gen_eos = getattr(self._model.generation_config, "eos_token_id", None)
            eos.update(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos else [])
            self._decoder = BatchDecoder(self._model, self.tokenizer, sorted(eos),
                                         max_batch=self._row_batch_size())
        return self._decoder

    @property
    def verifier(self):  # type: ignore[no-untyped-def]
        if self._verifier is None:
            spec = self._verifier_spec
            if spec == "self":
                eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
                self._verifier = SelfVerifier(
                    self._model, self.tokenizer, self.decoder, self._extractor,
                    self.sr_config.verifier_max_tokens, stop=handle_stop_sequences(None, eos),
                )
            elif spec == "none":
                self._verifier = NoVerifier()
            else:
                self._verifier = as_batch_verifier(spec)
        return self._verifier

    def _row_batch_size(self) -> int:
        """Rows decoded together. ``batch_size=auto`` means: as many as fit a KV budget of a
        quarter of free memory for 1,024-token rows, capped at 64 (OOM still halves it)."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        import psutil

        cfg = self._model.config.get_text_config()
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        itemsize = next(self._model.parameters()).element_size()
        per_row = 2 * cfg.num_hidden_layers * heads * head_dim * itemsize * 1024
        fit = int(psutil.virtual_memory().available * 0.25 // per_row)
        size = max(1, min(AUTO_BATCH_CAP, fit))
        log.info("batch_size=auto: decoding up to %d rows at once", size)
        return size

    def _group(self, requests: list) -> list[_Unique]:
        seen: dict[str, _Unique] = {}
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            key = context + "\x00" + json.dumps(gen_kwargs, sort_keys=True, default=str)
            if key not in seen:
                seen[key] = _Unique(context, gen_kwargs, getattr(req, "task_name", "") or "", [])
            seen[key].indices.append(i)
        return list(seen.values())

    def _seed(self, u: _Unique) -> int:
        """Per-question seed from the prompt and configuration, never from doc_id or rank,
        so results do not depend on --limit, sharding or request order."""
        blob = "\x00".join([u.context, json.dumps(u.gen_kwargs, sort_keys=True, default=str),
                            self.sr_config.fingerprint()])
        return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "big") >> 1

    def _strategy(self, u: _Unique) -> Strategy | None:
        """The question's strategy; None if even its prompt cannot be run (logged)."""
        try:
            return self._build_strategy(u)
        except Exception as exc:
            log.error("cannot run prompt %r...: %r; answering with an empty string",
                      u.context[:60], exc)
            return None

    def _build_strategy(self, u: _Unique) -> Strategy:
        kwargs = normalize_gen_kwargs(dict(u.gen_kwargs), self.max_gen_toks)
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        until = tuple(handle_stop_sequences(kwargs.pop("until", None), eos=eos))
        max_gen = int(kwargs.pop("max_gen_toks"))
        max_ctx = self.max_length - max_gen
        ids, _ = self.tok_batch_encode([u.context], left_truncate_len=None,
                                       truncation=self.truncation)
        ids = ids[0].tolist()
        too_long = len(ids) > max_ctx
        if too_long:
            ids = ids[-max_ctx:]  # what HFLM's own greedy path does
        ctx = QuestionContext(
            prompt=u.context, state=prefill(self._model, ids), task_name=u.task_name,
            seed=self._seed(u), cfg=self.sr_config, coherence=self._coherence_fn,
            extract=self._extractor(u.task_name),
            embeddings=self._model.get_input_embeddings().weight.detach(),
            embedding_std=self._embedding_std, until=until, max_new_tokens=max_gen,
        )
        if too_long:
            s: Strategy = Greedy(ctx)
            s.fallback = f"prompt of {len(ids)}+ tokens longer than the context ({max_ctx})"
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

    def _fall_back(self, strategies: list[Strategy], runner: LockstepRunner) -> list[Strategy]:
        """Answer failed or empty searches with plain greedy, all in one batch."""
        redo = []
        for i, s in enumerate(strategies):
            if s.fallback is None and not isinstance(s, Greedy) and s.generations \
                    and not s.ranked()[0].text.strip():
                s.fallback = "empty generation"
            if s.fallback is not None and not (isinstance(s, Greedy) and s.generations):
                redo.append(i)
        if not redo:
            return strategies
        greedy = []
        for i in redo:
            old = strategies[i]
            g = Greedy(old.ctx)
            g.counters = old.counters
            g.fallback = old.fallback
            if old.fallback not in self._fallback_reasons:
                log.warning("falling back to greedy: %s", old.fallback)
            greedy.append(g)
        runner.verifier = None
        runner.run(greedy, desc="greedy fallback")
        for i, g in zip(redo, greedy):
            g.stop_reason = "fallback"
            strategies[i] = g
        return strategies

    def _account(self, s: Strategy) -> None:
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
            record["prompt_sha"] = hashlib.sha256(s.ctx.prompt.encode()).hexdigest()[:16]
            record["config"] = self.sr_config.fingerprint()
            self._trace.write(record)

    def _count_fallback(self, reason: str) -> None:
        self._stats["fallbacks"] += 1
        key = reason.split(":")[0]
        self._fallback_reasons[key] = self._fallback_reasons.get(key, 0) + 1

    def _to_text(self, tokens: list[int], until) -> str:  # type: ignore[no-untyped-def]
        text = self.tok_decode(tokens)
        think = self.think_end_token if isinstance(self.think_end_token, str) else None
        return postprocess_generated_text(generation=text, stop=list(until),
                                          think_end_token=think)

    def _token_spans(self, tokens: list[int]) -> list[tuple[int, int]]:
        spans, prev = [], 0
        for i in range(len(tokens)):
            end = len(self.tok_decode(tokens[: i + 1]))
            spans.append((prev, end))
            prev = end
        return spans
