"""What the search needs from whatever runs the model: one interface, two implementations.

Strategies, the runner and the verifier speak only these types. An engine prefills prompts
into :class:`PromptState` s (the first-token distribution plus whatever the engine needs to
continue from there) and decodes :class:`DecodeRow` s, each a prompt and an optional vector fed
at the first generated position. ``engines/hf.py`` runs a Hugging Face model with our own KV
cache handling; ``engines/vllm/`` runs vLLM from prompt embeddings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from lm_eval_softreason.errors import UserError


class EngineUnavailable(UserError):
    """The engine cannot run anything any more (every server gone): the run stops instead of
    failing each remaining question over to greedy, which would fail the same way."""


@dataclass
class PromptState:
    """A prompt ready to decode from. Engines subclass it to carry their own payload (a KV
    cache, prompt embeddings); everything else reads only these fields."""

    length: int
    # [vocab] float32, CPU or the model's device: logits or log-probs (argmax, top-k and
    # softmax at a temperature, all that strategies do with them, are the same for both)
    next_logits: torch.Tensor
    prefilled_tokens: int  # tokens actually run through the model (excludes a reused prefix)

    @property
    def greedy_token(self) -> int:
        return int(torch.argmax(self.next_logits))


@dataclass
class DecodeRow:
    """One sequence to decode after a prompt.

    ``first_token`` is emitted as the first output token (its text is part of the output);
    ``first_embed`` is what the model is fed at the first generated position. With only
    ``first_token`` this is ordinary decoding; with both it is Soft Reasoning's perturbed first
    token (paper); with only ``first_embed`` it is a virtual token that emits no text
    (reference code). ``temperature`` 0 means greedy for every later step; otherwise later
    tokens are sampled from a stream seeded by ``seed`` alone, so a row's sample does not depend
    on the batch it shares.
    """

    prompt: PromptState
    first_token: int | None = None
    first_embed: torch.Tensor | None = None
    temperature: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.first_token is None and self.first_embed is None:
            raise ValueError("DecodeRow needs first_token, first_embed or both")


@dataclass
class DecodeResult:
    """What a row produced: its tokens (the first token included when the row emits one), their
    log-probs and top-1/top-2 probability margins, and why it stopped."""

    tokens: list[int]
    logprobs: list[float]
    margins: list[float]
    stop_reason: str = ""

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


class Engine(ABC):
    """Runs one model for the search. Implementations: ``HFEngine``, ``VLLMEngine``."""

    tokenizer: PreTrainedTokenizerBase
    dtype: torch.dtype  # the weights' dtype: part of what identifies a model's outputs

    @abstractmethod
    def prefill(self, token_ids: Sequence[int], prefix: PromptState | None = None) -> PromptState:
        """The state after ``token_ids`` (continuing ``prefix`` if given: its tokens come first
        and, where the engine can, are not run again)."""

    def prefill_many(self, prompts: Sequence[Sequence[int]],
                     prefix: PromptState | None = None) -> list[PromptState]:
        """Several prompts at once, each continuing ``prefix`` if given (the questions joining
        the window in one round, a round's verifier prompts); engines that batch prefill
        override this."""
        return [self.prefill(ids, prefix) for ids in prompts]

    @abstractmethod
    def decode(
        self, rows: Sequence[DecodeRow], until: Sequence[str], max_new_tokens: int
    ) -> list[DecodeResult]:
        """Decode every row (all in one call, so the engine can batch them); results in the
        order of ``rows``. A row stops at EOS, at a stop string or at ``max_new_tokens``."""

    @abstractmethod
    def input_embeddings(self) -> torch.Tensor:
        """The model's input embedding table ``[vocab, hidden]`` (the search perturbs rows)."""

    @abstractmethod
    def state_bytes_per_token(self) -> int:
        """Memory a prompt state pins per prompt token (sizes ``max_active=auto``)."""

    def release(self, state: PromptState) -> None:
        """The question of ``state`` is finished; engines holding resources per state free
        them here. Dropping the last reference is enough for both engines so far."""

    def close(self) -> None:
        """Shut down worker processes, if the engine has any."""
