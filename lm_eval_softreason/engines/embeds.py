"""What both prompt-embedding engines share: the offline vLLM one and the ``vllm serve`` client.

Each prompt is sent as embeddings (rows of the model's input table), so every row of a prompt
shares its prefix-cache blocks; a row appends one vector. The backend only generates: a
subclass implements :meth:`EmbedsEngine._first_position` (prefill: the first position's
log-probs) and :meth:`EmbedsEngine._continue` (decode), and this class turns prompts and rows
into those calls and applies the HF engine's output rules (first token, EOS, stop strings,
budget, log-probs, margins) to what comes back. docs/architecture.md, "The vLLM engine".
"""

from __future__ import annotations

import dataclasses
import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from lm_eval_softreason.engines.base import DecodeResult, DecodeRow, Engine, PromptState
from lm_eval_softreason.engines.checkpoint import embedding_scale, load_embedding_table
from lm_eval_softreason.engines.output import StopChecker


@dataclass
class EmbedsPromptState(PromptState):
    """A prompt as embeddings ``[length, hidden]`` (model dtype, CPU) and its token ids.

    The backend keeps the prompt's KV blocks in its prefix cache; the state holds only what is
    needed to send the prompt again plus its first-token distribution.
    """

    embeds: torch.Tensor | None = None
    token_ids: tuple[int, ...] = ()


@dataclass
class Continuation:
    """One generation request: ``embeds`` followed by up to ``max_tokens`` new tokens."""

    embeds: torch.Tensor
    max_tokens: int
    temperature: float  # 0: greedy
    seed: int | None  # the sampling stream when temperature > 0
    stop: list[str]  # stop strings the backend may stop at early (our rule decides the end)
    key: tuple[int, ...] = ()  # token ids of the prompt it continues (replica affinity)
    # the same input as ids: a greedy row without a vector (sampled rows keep embeddings, so a
    # seeded stream is never cut and resumed by _resumed)
    token_ids: tuple[int, ...] | None = None


@dataclass
class Generated:
    """What the backend generated for a :class:`Continuation`: each token with its log-prob
    and top-1/top-2 probability margin, and why it ended (``max_tokens``, ``eos``,
    ``stop_string``)."""

    tokens: list[int]
    logprobs: list[float] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    reason: str = ""


class EmbedsEngine(Engine):
    """An :class:`Engine` whose backend takes prompt embeddings and generates from them.

    Subclasses set ``tokenizer``, ``dtype``, ``eos`` (the EOS ids), ``vocab_size``,
    ``hidden_size``, ``model_path``, ``revision``, ``text_config`` and ``embed_key``, and
    implement the two backend calls.
    """

    vocab_size: int
    hidden_size: int
    eos: list[int]
    model_path: str
    revision: str | None
    text_config: Any
    embed_key: str | None = None
    _table: torch.Tensor | None = None

    @abstractmethod
    def _first_position(self, prompts: list[torch.Tensor],
                        keys: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """The first generated position's log-probs of each prompt (given as embeddings and
        as token ids), ``[vocab]`` float32 (``-inf`` where the backend returned none)."""

    @abstractmethod
    def _continue(self, jobs: list[Continuation]) -> list[Generated]:
        """Generate for every job (one call, so the backend can batch); in order."""

    # -- embeddings ---------------------------------------------------------------------------

    def input_embeddings(self) -> torch.Tensor:
        """The vectors the model consumes for each token, ``[vocab, hidden]`` in the model's
        dtype on the CPU: the checkpoint's table read alone (:func:`load_embedding_table`),
        times the scale some model families apply before the first layer
        (:func:`embedding_scale`). The row of the greedy token reproduces greedy."""
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

    # -- prefill ------------------------------------------------------------------------------

    def prefill(self, token_ids: Sequence[int],
                prefix: PromptState | None = None) -> EmbedsPromptState:
        return self.prefill_many([token_ids], prefix)[0]

    def prefill_many(
        self,
        prompts: Sequence[Sequence[int]],
        prefix: PromptState | Sequence[PromptState | None] | None = None,
    ) -> list[EmbedsPromptState]:
        """Prefill every prompt in one backend call. ``prefix`` is one state continued by
        every prompt, or one (or ``None``) per prompt. A prompt continuing a prefix is sent as
        the prefix's embeddings followed by its own; the prefix cache serves the prefix's full
        blocks, and ``prefilled_tokens`` counts only the new tokens. An empty prompt returns
        its prefix unchanged, as on the HF engine."""
        if prefix is None or isinstance(prefix, PromptState):
            prefixes: list[PromptState | None] = [prefix] * len(prompts)
        else:
            prefixes = list(prefix)
            if len(prefixes) != len(prompts):
                raise ValueError("prefill_many: one prefix per prompt, or a single prefix")
        states: list[EmbedsPromptState | None] = [None] * len(prompts)
        todo: list[tuple[int, list[int], torch.Tensor, tuple[int, ...]]] = []
        for i, (ids, pre) in enumerate(zip(prompts, prefixes)):
            ids = [int(t) for t in ids]
            if pre is not None and not isinstance(pre, EmbedsPromptState):
                raise TypeError(f"prefix must be an EmbedsPromptState, not {type(pre).__name__}")
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
            firsts = self._first_position([e for _, _, e, _ in todo], [k for *_, k in todo])
            for (i, ids, embeds, all_ids), first in zip(todo, firsts):
                states[i] = EmbedsPromptState(
                    length=embeds.shape[0], next_logits=first, prefilled_tokens=len(ids),
                    embeds=embeds, token_ids=all_ids)
        return states  # type: ignore[return-value]

    # -- decode -------------------------------------------------------------------------------

    def decode(self, rows: Sequence[DecodeRow], until: Sequence[str],
               max_new_tokens: int) -> list[DecodeResult]:
        """Decode every row in one backend call; results in the order of ``rows``."""
        stopper = StopChecker(self.tokenizer, until)
        results = [DecodeResult(tokens=[], logprobs=[], margins=[]) for _ in rows]
        jobs: list[Continuation] = []
        sent: list[int] = []
        for i, (row, res) in enumerate(zip(rows, results)):
            state = row.prompt
            if not isinstance(state, EmbedsPromptState) or state.embeds is None:
                raise TypeError(f"{type(self).__name__}.decode needs prompts it prefilled")
            if row.first_token is not None:
                lp = state.next_logits.float()  # log-probs already (maybe only the top few)
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
            sampled = row.temperature > 0
            jobs.append(Continuation(
                embeds=torch.cat([state.embeds, vec]),
                max_tokens=max_new_tokens - len(res.tokens),
                temperature=float(row.temperature) if sampled else 0.0,
                seed=int(row.seed) if sampled else None,
                stop=list(stopper.until), key=state.token_ids,
                token_ids=None if row.first_embed is not None or sampled
                else state.token_ids + (int(row.first_token),)))  # type: ignore[arg-type]
            sent.append(i)
        while jobs:
            again: list[tuple[int, Continuation]] = []
            for i, job, out in zip(sent, jobs, self._continue(jobs)):
                res = results[i]
                start = len(res.tokens)
                tokens = res.tokens + out.tokens
                end, reason = self._first_stop(tokens, start, stopper, max_new_tokens)
                res.logprobs.extend(out.logprobs[:end - start])
                res.margins.extend(out.margins[:end - start])
                res.tokens = tokens[:end]
                if not reason and out.reason == "stop_string" and out.tokens:
                    again.append((i, self._resumed(job, out.tokens)))
                else:  # no HF stop in what came back: the backend's reason (budget, EOS)
                    res.stop_reason = reason or out.reason
            sent, jobs = [i for i, _ in again], [job for _, job in again]
        return results

    def _resumed(self, job: Continuation, new: list[int]) -> Continuation:
        """The backend stopped at a stop string that the HF rule does not see in the row's
        tokens (its text came from a token-id prompt's decoding context): go on from there."""
        return dataclasses.replace(
            job, embeds=torch.cat([job.embeds, self._embed(new)]),
            max_tokens=job.max_tokens - len(new),
            token_ids=None if job.token_ids is None else job.token_ids + tuple(new))

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
        hit at ``end`` (where the backend itself stopped) with no stop string in the text of
        ``tokens[:end - 1]`` means ``end`` is the first hit. Otherwise (e.g. a stop string
        straddling the first token, which the backend cannot see: it is part of its prompt)
        every ``k`` is tried, as the HF engine does.
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

    def state_bytes_per_token(self) -> int:
        """The prompt embeddings a state keeps per token (the backend's KV cache is its own)."""
        return self.hidden_size * self.dtype.itemsize


def margin(top1: float, top2: float) -> float:
    """Top-1 minus top-2 probability, from their log-probs."""
    return math.exp(top1) - math.exp(top2)
