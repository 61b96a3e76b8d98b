"""The Hugging Face engine: batched decoding from prefilled prompts with our own KV caches.

Soft Reasoning decodes many candidates that share a prompt and differ only in the embedding fed
at the first generated position. So a prompt is prefilled once (:func:`prefill`), its KV cache is
copied into every row that needs it, and rows of many prompts are decoded as one left-padded
batch (:class:`BatchDecoder`). Explicit position ids and attention masks keep each row's output
identical to decoding it alone; rows leave the batch as soon as they stop.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lm_eval_softreason.compat import (
    cache_arg,
    cache_layers,
    consumed_embeddings,
    keep_rows,
    new_cache,
)
from lm_eval_softreason.engines.base import DecodeResult, DecodeRow, Engine, PromptState
from lm_eval_softreason.engines.output import StopChecker

log = logging.getLogger(__name__)


@dataclass
class HFPromptState(PromptState):
    """A prompt after prefill on the HF engine: its KV cache (batch 1, per layer)."""

    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None


class HFEngine(Engine):
    """:class:`Engine` on a loaded ``PreTrainedModel`` (what ``--model softreason`` uses)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 eos_token_ids: Sequence[int], max_batch: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.dtype = model_dtype(model)
        self.decoder = BatchDecoder(model, tokenizer, eos_token_ids, max_batch)

    def prefill(self, token_ids: Sequence[int], prefix: PromptState | None = None) -> PromptState:
        return prefill(self.model, token_ids, prefix)  # type: ignore[arg-type]

    def decode(self, rows: Sequence[DecodeRow], until: Sequence[str],
               max_new_tokens: int) -> list[DecodeResult]:
        return self.decoder.decode(rows, until, max_new_tokens)

    def input_embeddings(self) -> torch.Tensor:
        return consumed_embeddings(self.model)

    def state_bytes_per_token(self) -> int:
        return kv_bytes_per_token(self.model)


def model_dtype(model: PreTrainedModel) -> torch.dtype:
    return next(model.parameters()).dtype


def kv_bytes_per_token(model: PreTrainedModel) -> int:
    """Keys and values of every layer for one token: what a row or a prompt state costs."""
    cfg = model.config.get_text_config()
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * heads * head_dim * model_dtype(model).itemsize


@torch.inference_mode()
def prefill(
    model: PreTrainedModel, token_ids: Sequence[int], prefix: HFPromptState | None = None
) -> HFPromptState:
    """Run a prompt through the model once, optionally continuing a prefilled ``prefix``.

    Prompts are prefilled one at a time: prefill is matrix-matrix work that batching barely
    speeds up on CPU, and batch 1 keeps the cache free of padding. Only the last position's
    logits are computed and kept: the LM head over every prompt position cost ~30 % of prefill
    time, and a view of those logits pinned ``prompt_len x vocab`` floats per live state (for
    a round's verifier prompts, tens of GB on a GPU; docs/performance.md).
    """
    if len(token_ids) == 0:
        if prefix is None:
            raise ValueError("cannot prefill an empty prompt")
        return prefix
    device = model.device
    ids = torch.tensor([list(token_ids)], dtype=torch.long, device=device)
    start = 0 if prefix is None else prefix.length
    cache = new_cache(model, None if prefix is None else list(prefix.kv or []))
    positions = torch.arange(start, start + ids.shape[1], device=device).unsqueeze(0)
    mask = torch.ones(1, start + ids.shape[1], dtype=torch.long, device=device)
    extra = {"logits_to_keep": 1} if _keeps_last_logits_only(type(model)) else {}
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, **cache_arg(model, cache),
        use_cache=True, **extra,
    )
    kv = cache_layers(cache)  # the forward pass filled the cache in place
    return HFPromptState(
        kv=kv,
        length=start + ids.shape[1],
        next_logits=out.logits[0, -1].float().clone(),  # a copy: frees the model's logits
        prefilled_tokens=ids.shape[1],
    )


@functools.cache
def _keeps_last_logits_only(model_class: type) -> bool:
    """Whether the model's forward takes transformers' ``logits_to_keep`` (most causal LMs)."""
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


class BatchDecoder:
    """Decodes :class:`DecodeRow` s of any prompts together, ``max_batch`` rows at a time.

    A chunk that runs out of memory is retried at half the size (logged), so a too-large
    ``batch_size`` degrades speed instead of failing the run.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        eos_token_ids: Sequence[int],
        max_batch: int,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos = set(int(t) for t in eos_token_ids)
        self.max_batch = max(1, int(max_batch))
        self.embed = model.get_input_embeddings()

    def decode(
        self, rows: Sequence[DecodeRow], until: Sequence[str], max_new_tokens: int
    ) -> list[DecodeResult]:
        """Decode every row; results come back in the order of ``rows``."""
        results: list[DecodeResult | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -rows[i].prompt.length)
        start = 0
        while start < len(order):
            size = self.max_batch
            idx = order[start:start + size]
            try:
                for i, res in zip(idx, self._decode_chunk([rows[i] for i in idx], until,
                                                          max_new_tokens)):
                    results[i] = res
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
                if not _is_oom(exc) or size == 1:
                    raise
                self.max_batch = max(1, size // 2)
                log.warning("out of memory decoding %d rows; batch size lowered to %d",
                            size, self.max_batch)
                continue
            start += len(idx)
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _decode_chunk(
        self, rows: Sequence[DecodeRow], until: Sequence[str], max_new_tokens: int
    ) -> list[DecodeResult]:
        device = self.model.device
        dtype = model_dtype(self.model)
        n = len(rows)
        width = max(r.prompt.length for r in rows)
        cache = new_cache(self.model, _stack_kv(rows, width))
        mask = torch.zeros(n, width + 1, dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            mask[i, width - r.prompt.length:] = 1
        positions = torch.tensor([r.prompt.length for r in rows], device=device)
        stopper = StopChecker(self.tokenizer, until)
        generators = [torch.Generator().manual_seed(r.seed) if r.temperature > 0 else None
                      for r in rows]

        results = [DecodeResult(tokens=[], logprobs=[], margins=[]) for _ in rows]
        first = []
        for r, res in zip(rows, results):
            if r.first_token is not None:
                lp = torch.log_softmax(r.prompt.next_logits, -1)
                top2 = torch.topk(lp.exp(), 2).values
                res.tokens.append(r.first_token)
                res.logprobs.append(float(lp[r.first_token]))
                res.margins.append(float(top2[0] - top2[1]))
            vec = r.first_embed if r.first_embed is not None else self.embed(
                torch.tensor(r.first_token, device=device))
            first.append(vec.to(device=device, dtype=dtype))
        inputs = {"inputs_embeds": torch.stack(first).unsqueeze(1)}

        alive = list(range(n))  # batch slot -> row index
        for i in list(alive):
            reason = self._stop_reason(results[i], stopper, max_new_tokens)
            if reason:
                results[i].stop_reason = reason
        keep = [j for j, i in enumerate(alive) if not results[i].stop_reason]
        if len(keep) < len(alive):
            alive, mask, positions, inputs = _select(keep, alive, mask, positions, inputs, cache)

        while alive:
            out = self.model(
                **inputs, attention_mask=mask, position_ids=positions.unsqueeze(1),
                **cache_arg(self.model, cache), use_cache=True,
            )
            logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            next_tokens, chosen_lp, margins = _choose_batch(
                logp, [rows[i] for i in alive], [generators[i] for i in alive])
            for slot, i in enumerate(alive):
                results[i].tokens.append(next_tokens[slot])
                results[i].logprobs.append(chosen_lp[slot])
                results[i].margins.append(margins[slot])
                reason = self._stop_reason(results[i], stopper, max_new_tokens)
                if reason:
                    results[i].stop_reason = reason
            inputs = {"input_ids": torch.tensor(next_tokens, device=device).unsqueeze(1)}
            mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
            positions = positions + 1
            keep = [j for j, i in enumerate(alive) if not results[i].stop_reason]
            if len(keep) < len(alive):
                alive, mask, positions, inputs = _select(keep, alive, mask, positions, inputs,
                                                         cache)
        return results

    def _stop_reason(self, res: DecodeResult, stopper: StopChecker, max_new: int) -> str:
        if res.tokens and res.tokens[-1] in self.eos:
            return "eos"
        if res.tokens and stopper.hit(res.tokens):
            return "stop_string"
        if len(res.tokens) >= max_new:
            return "max_tokens"
        return ""


def _choose_batch(
    logp: torch.Tensor, rows: Sequence[DecodeRow], generators: Sequence[torch.Generator | None]
) -> tuple[list[int], list[float], list[float]]:
    """Next token, its log-prob and the top-1/top-2 probability margin for every row.

    Done for the whole batch with a few device-to-host copies per step: per-row ``int()``
    calls cost a GPU sync each, which at a few hundred rows outweighs the forward pass.
    """
    tokens = torch.argmax(logp, dim=-1)
    sampled = [slot for slot, r in enumerate(rows) if r.temperature > 0]
    if sampled:
        index = torch.tensor(sampled, device=logp.device)
        temps = torch.tensor([rows[s].temperature for s in sampled], device=logp.device)
        uniform = torch.tensor([float(torch.rand(1, generator=generators[s]))
                                for s in sampled], dtype=torch.float64)
        tokens[index] = _sample_inverse_cdf(logp[index] / temps.unsqueeze(1), uniform)
    top2 = torch.topk(logp, 2, dim=-1).values.exp()
    chosen = logp.gather(1, tokens.unsqueeze(1)).squeeze(1)
    return tokens.tolist(), chosen.tolist(), (top2[:, 0] - top2[:, 1]).tolist()


def _sample_inverse_cdf(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One exact draw per row from softmax(logits), by inverting the row's CDF at ``uniform``.

    Each row's draw depends only on its own logits and its own uniform number (taken from the
    row's seeded CPU generator), so it is reproducible whatever the batch or the device, and
    the whole batch is sampled on the device: per-row full-vocabulary work on the CPU made
    sampling on a GPU ~10x slower than greedy decoding.
    """
    probs = torch.softmax(logits.double(), dim=-1)
    cdf = probs.cumsum(dim=-1)
    target = uniform.to(cdf.device).unsqueeze(1) * cdf[:, -1:]
    # right=True: the first token whose cumulative mass exceeds the target, so a token of
    # zero probability is never drawn
    picked = torch.searchsorted(cdf, target, right=True).squeeze(1)
    return picked.clamp_(max=logits.shape[-1] - 1)


def _stack_kv(rows: Sequence[DecodeRow], width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Left-pad every row's prompt cache to ``width`` and stack them along the batch."""
    n_layers = len(rows[0].prompt.kv)
    stacked = []
    for layer in range(n_layers):
        keys, values = [], []
        for r in rows:
            k, v = r.prompt.kv[layer]
            pad = width - k.shape[2]
            if pad:
                k = torch.nn.functional.pad(k, (0, 0, pad, 0))
                v = torch.nn.functional.pad(v, (0, 0, pad, 0))
            keys.append(k)
            values.append(v)
        stacked.append((torch.cat(keys), torch.cat(values)))
    return stacked


def _select(keep, alive, mask, positions, inputs, cache):  # type: ignore[no-untyped-def]
    """Drop finished rows from every batch tensor and from the KV cache."""
    index = torch.tensor(keep, dtype=torch.long, device=mask.device)
    if len(keep):
        keep_rows(cache, index)
    name, tensor = next(iter(inputs.items()))
    return ([alive[j] for j in keep], mask[index], positions[index], {name: tensor[index]})


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text
