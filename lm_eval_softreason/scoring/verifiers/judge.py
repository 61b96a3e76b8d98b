"""*Judge* verifiers: the model gives each candidate a verdict, correct (reward 1) or
incorrect (0); a verdict it does not state clearly counts 0.5, neither for nor against."""

from __future__ import annotations

import re

from lm_eval_softreason.scoring.verification import VerifyRequest, VerifyResult
from lm_eval_softreason.scoring.verifiers.base import ModelVerifier, verifier_instructions

UNCLEAR = 0.5
_VERDICT = r"\**\s*[:：\-]?\s*\**\s*(?:is\s+)?\**(not\s+correct|incorrect|wrong|correct|right)\b"
_SINGLE_RE = re.compile(r"verdict" + _VERDICT, re.IGNORECASE)


def _reward(word: str) -> float:
    return 1.0 if word.lower() in ("correct", "right") else 0.0


class MultiJudge(ModelVerifier):
    """One call per question and round judges every candidate of the round."""

    per_candidate = False
    instructions = verifier_instructions(
        per_candidate, "each one", "one line per solution of the form 'Solution <number>: "
        "correct' or 'Solution <number>: incorrect'")

    def conclude(self, request: VerifyRequest, analyses: list[str]) -> VerifyResult:
        (analysis,) = analyses
        rewards = []
        for i in range(1, len(request.candidates) + 1):
            verdicts = re.findall(rf"solution\s*{i}" + _VERDICT, analysis, re.IGNORECASE)
            rewards.append(_reward(verdicts[-1]) if verdicts else UNCLEAR)
        return VerifyResult(rewards=rewards, verifier_answers=[])


class SingleJudge(ModelVerifier):
    """One call per candidate, which it judges alone."""

    per_candidate = True
    instructions = verifier_instructions(
        per_candidate, "whether its final answer is correct",
        "a final line of the form 'Verdict: correct' or 'Verdict: incorrect'")

    def conclude(self, request: VerifyRequest, analyses: list[str]) -> VerifyResult:
        rewards = []
        for analysis in analyses:
            verdicts = _SINGLE_RE.findall(analysis)
            rewards.append(_reward(verdicts[-1]) if verdicts else UNCLEAR)
        return VerifyResult(rewards=rewards, verifier_answers=[])
