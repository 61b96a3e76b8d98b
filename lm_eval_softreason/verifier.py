"""The built-in ``self`` verifier: the same model reads a round's candidates and answers itself.

As in the paper ("multi-generate"), one greedy verifier call per question and round sees the
question and that round's candidate solutions and writes its own final answer; a candidate's
reward is 1 when its answer equals the verifier's. Verifier prompts of all questions in a round
are decoded as one batch, and the instruction prefix is prefilled once per run.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Sequence

from lm_eval_softreason.answers import answers_match
from lm_eval_softreason.engines.base import DecodeRow, Engine, PromptState
from lm_eval_softreason.objectives import VerifyRequest, VerifyResult

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

INSTRUCTIONS = (
    "You are checking candidate solutions to a problem. Read the problem and the candidate "
    "solutions, reason step by step about which answer is correct (the candidates may all be "
    "wrong), then end with a final line of the form 'Answer: <final answer>'.\n\n"
)
ANALYSIS_START = "Analysis: Let's think step by step."
MAX_CANDIDATE_CHARS = 1500  # keep each candidate's tail: that is where answers are
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


class SelfVerifier:
    """Same-model verifier; implements :class:`~lm_eval_softreason.objectives.BatchVerifier`."""

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

    def build_prompt(self, request: VerifyRequest) -> tuple[str, str]:
        """Return (shared prefix, question-specific rest) of the verifier prompt."""
        question, templated = self.chat.unwrap(request.question)
        parts = [f"Problem:\n{question.strip()}\n"]
        for i, text in enumerate(request.candidates, 1):
            body = text.strip()
            if len(body) > MAX_CANDIDATE_CHARS:
                body = "..." + body[-MAX_CANDIDATE_CHARS:]
            parts.append(f"Solution {i}:\n{body}\n")
        message = "\n".join(parts)
        if templated:
            assert self.chat.prefix is not None and self.chat.suffix is not None
            return (self.chat.prefix + INSTRUCTIONS,
                    message + self.chat.suffix + ANALYSIS_START)
        return INSTRUCTIONS, message + "\n" + ANALYSIS_START

    def _prefix(self, text: str, templated: bool) -> PromptState:
        if templated not in self._prefix_state:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            self._prefix_state[templated] = self.engine.prefill(ids)
        return self._prefix_state[templated]

    def verify_many(self, requests: Sequence[VerifyRequest]) -> list[VerifyResult]:
        states: list[PromptState | None] = [None] * len(requests)
        groups: dict[str, list[tuple[int, list[int]]]] = {}
        for i, req in enumerate(requests):
            prefix, rest = self.build_prompt(req)
            groups.setdefault(prefix, []).append(
                (i, self.tokenizer.encode(rest, add_special_tokens=False)))
        for prefix, members in groups.items():  # one prefill call per shared prefix
            done = self.engine.prefill_many([ids for _, ids in members],
                                            prefix=self._prefix(prefix, prefix != INSTRUCTIONS))
            for (i, _), state in zip(members, done):
                states[i] = state
        rows = [DecodeRow(s, first_token=s.greedy_token) for s in states if s is not None]
        prefilled = [row.prompt.prefilled_tokens for row in rows]
        decoded = self.engine.decode(rows, self.stop, self.max_new_tokens)
        results = []
        for req, res, n_prefill in zip(requests, decoded, prefilled):
            analysis = self.tokenizer.decode(res.tokens, skip_special_tokens=True)
            for s in self.stop:
                if s and s in analysis:
                    analysis = analysis.split(s)[0]
            answer = self.parse_answer(analysis, req.task_name)
            rewards = [1.0 if answers_match(a, answer) else 0.0 for a in req.answers]
            results.append(VerifyResult(
                rewards=rewards, verifier_answer=answer, analysis=analysis,
                tokens_generated=res.n_tokens, tokens_prefilled=n_prefill,
            ))
        return results

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
