"""*Generate* verifiers: the model solves the problem itself, having read candidate solutions,
and a candidate's reward is 1 when its answer equals the verifier's, else 0."""

from __future__ import annotations

from lm_eval_softreason.scoring.answers import answers_match
from lm_eval_softreason.scoring.verification import VerifyRequest, VerifyResult
from lm_eval_softreason.scoring.verifiers.base import ModelVerifier, verifier_instructions

_ANSWER_LINE = "a final line of the form 'Answer: <final answer>'"


class MultiGenerate(ModelVerifier):
    """The paper's default: one call per question and round reads all of the round's
    candidates and writes one answer."""

    per_candidate = False
    instructions = verifier_instructions(
        per_candidate, "which answer is correct (the candidates may all be wrong)", _ANSWER_LINE)

    def conclude(self, request: VerifyRequest, analyses: list[str]) -> VerifyResult:
        (analysis,) = analyses
        answer = self.parse_answer(analysis, request.task_name)
        return VerifyResult(rewards=[1.0 if answers_match(a, answer) else 0.0
                                     for a in request.answers],
                            verifier_answer=answer)


class SingleGenerate(ModelVerifier):
    """One call per candidate, which it reads alone: the verifier is not swayed by the other
    candidates, at one verifier generation per candidate."""

    per_candidate = True
    instructions = verifier_instructions(
        per_candidate, "what the correct answer is (the candidate may be wrong)", _ANSWER_LINE)

    def conclude(self, request: VerifyRequest, analyses: list[str]) -> VerifyResult:
        answers = [self.parse_answer(a, request.task_name) for a in analyses]
        return VerifyResult(rewards=[1.0 if answers_match(a, v) else 0.0
                                     for a, v in zip(request.answers, answers)],
                            verifier_answers=answers)
