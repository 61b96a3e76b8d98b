"""What every same-model verifier shares: prompts in the task's chat format, a shared
instruction prefix prefilled once per run, and one engine call per round for all prompts.

A design (``generate.py``, ``judge.py``) says only whether the verifier reads a round's
candidates together or one per prompt (``per_candidate``), what it is asked
(``instructions``), and how its texts become rewards (:meth:`ModelVerifier.conclude`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, Sequence

from lm_eval_softreason.engines.base import DecodeRow, Engine, PromptState
from lm_eval_softreason.scoring.verification import VerifyRequest, VerifyResult

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ANALYSIS_START = "Analysis: Let's think step by step."
MAX_CANDIDATE_CHARS = 1500  # keep each candidate's tail: that is where answers are
ANALYSES_SEPARATOR = "\n\n---\n\n"  # between the analyses of one round in the trace
_ANSWER_RE = re.compile(r"answer\s*(?:is)?\s*[:：]", re.IGNORECASE)
_SENTINEL = "\u0000SOFTREASON\u0000"


class ChatFormat:
    """Detects whether prompts were chat-templated and wraps verifier prompts the same way.

    lm-eval passes the already-templated context; rendering the template around a sentinel
    gives the prefix/suffix to strip from it and to put around our own message.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.prefix = self.suffix = None
        if getattr(tokenizer, "chat_template", None):
            try:
                rendered = tokenizer.apply_chat_template(
                    [{"role": "user", "content": _SENTINEL}], tokenize=False,
                    add_generation_prompt=True,
                )
                self.prefix, self.suffix = rendered.split(_SENTINEL)
            except Exception:  # templates that reject this message: treat prompts as raw
                self.prefix = self.suffix = None

    def unwrap(self, context: str) -> tuple[str, bool]:
        """The user's message inside a templated ``context`` (and whether it was templated)."""
        if self.prefix is not None and self.suffix is not None:
            marker = _last_line(self.prefix)
            user_start = context.rfind(marker)
            if marker and user_start >= 0 and context.endswith(self.suffix):
                return context[user_start + len(marker):len(context) - len(self.suffix)], True
        return context, False


def _last_line(prefix: str) -> str:
    """The part of the template just before the user's text (e.g. '<|im_start|>user\\n')."""
    cut = prefix.rstrip("\n").rfind("\n")
    return prefix[cut + 1:] if cut >= 0 else prefix


def verifier_instructions(per_candidate: bool, reason_about: str, end_with: str) -> str:
    """A design's instructions (the shared prefix of its prompts): every design is asked in
    the same words, about one candidate or a round's, and differs only in what it reasons about
    and the final line it must write."""
    solutions = "candidate solution" if per_candidate else "candidate solutions"
    article = "a " if per_candidate else ""
    return (f"You are checking {article}{solutions} to a problem. Read the problem and the "
            f"{solutions}, reason step by step about {reason_about}, then end with "
            f"{end_with}.\n\n")


def solution_text(text: str) -> str:
    """A candidate as the verifier reads it: stripped, long ones cut to their tail."""
    body = text.strip()
    return "..." + body[-MAX_CANDIDATE_CHARS:] if len(body) > MAX_CANDIDATE_CHARS else body


class ModelVerifier(ABC):
    """A verifier that is the model itself; implements
    :class:`~lm_eval_softreason.scoring.verification.BatchVerifier`."""

    instructions: str  # the shared prefix of every prompt of this design
    per_candidate: bool  # one prompt per candidate, else one per question and round

    def __init__(
        self,
        engine: Engine,
        extractor_for: Callable[[str], Callable[[str], str | None]],
        max_new_tokens: int,
        stop: Sequence[str],
    ) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.extractor_for = extractor_for
        self.max_new_tokens = max_new_tokens
        self.stop = list(stop)
        self.chat = ChatFormat(self.tokenizer)
        self._prefix_state: dict[bool, PromptState] = {}

    def messages(self, question: str, request: VerifyRequest) -> list[str]:
        """The question-specific part of each prompt this request needs (``question`` is
        the task prompt without its chat template)."""
        if self.per_candidate:
            return [f"Problem:\n{question}\n\nSolution:\n{solution_text(text)}\n"
                    for text in request.candidates]
        parts = [f"Problem:\n{question}\n"]
        parts += [f"Solution {i}:\n{solution_text(text)}\n"
                  for i, text in enumerate(request.candidates, 1)]
        return ["\n".join(parts)]

    @abstractmethod
    def conclude(self, request: VerifyRequest, analyses: list[str]) -> VerifyResult:
        """Rewards (and the verifier's answers) from the texts of this request's prompts;
        token counts are filled in by :meth:`verify_many`."""

    def build_prompts(self, request: VerifyRequest) -> list[tuple[str, str]]:
        """(shared prefix, question-specific rest) of each of the request's prompts."""
        question, templated = self.chat.unwrap(request.question)
        out = []
        for message in self.messages(question.strip(), request):
            if templated:
                assert self.chat.prefix is not None and self.chat.suffix is not None
                out.append((self.chat.prefix + self.instructions,
                            message + self.chat.suffix + ANALYSIS_START))
            else:
                out.append((self.instructions, message + "\n" + ANALYSIS_START))
        return out

    def _prefix(self, text: str, templated: bool) -> PromptState:
        if templated not in self._prefix_state:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            self._prefix_state[templated] = self.engine.prefill(ids)
        return self._prefix_state[templated]

    def verify_many(self, requests: Sequence[VerifyRequest]) -> list[VerifyResult]:
        owner: list[int] = []  # request index of each prompt
        groups: dict[str, list[tuple[int, list[int]]]] = {}
        for i, req in enumerate(requests):
            for prefix, rest in self.build_prompts(req):
                groups.setdefault(prefix, []).append(
                    (len(owner), self.tokenizer.encode(rest, add_special_tokens=False)))
                owner.append(i)
        states: list[PromptState | None] = [None] * len(owner)
        for prefix, members in groups.items():  # one prefill call per shared prefix
            done = self.engine.prefill_many(
                [ids for _, ids in members],
                prefix=self._prefix(prefix, prefix != self.instructions))
            for (k, _), state in zip(members, done):
                states[k] = state
        rows = [DecodeRow(s, first_token=s.greedy_token) for s in states if s is not None]
        decoded = self.engine.decode(rows, self.stop, self.max_new_tokens)  # one call per round
        analyses: list[list[str]] = [[] for _ in requests]
        generated = [0] * len(requests)
        prefilled = [0] * len(requests)
        for i, row, res in zip(owner, rows, decoded):
            analyses[i].append(self._text(res.tokens))
            generated[i] += res.n_tokens
            prefilled[i] += row.prompt.prefilled_tokens
        results = []
        for i, req in enumerate(requests):
            result = self.conclude(req, analyses[i])
            result.analysis = ANALYSES_SEPARATOR.join(analyses[i])
            result.tokens_generated, result.tokens_prefilled = generated[i], prefilled[i]
            results.append(result)
        return results

    def _text(self, tokens: Sequence[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for s in self.stop:
            if s and s in text:
                text = text.split(s)[0]
        return text

    def parse_answer(self, analysis: str, task_name: str) -> str | None:
        """The verifier's final answer: the text after its last 'Answer:', read with the
        task's own extraction filters; the line itself when those find nothing."""
        matches = list(_ANSWER_RE.finditer(analysis))
        snippet = (analysis[matches[-1].end():] if matches else analysis).strip()
        if not snippet:
            return None
        extracted = self.extractor_for(task_name)(snippet)
        if extracted is not None:
            return extracted
        line = snippet.splitlines()[0].strip().rstrip(".")
        return line or None
