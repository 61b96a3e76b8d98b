"""Same-model verifiers: the paper's four designs (section "verifier design").

|            | one call per round, all candidates | one call per candidate |
|------------|------------------------------------|------------------------|
| generate   | ``multi_generate`` (= ``self``)    | ``single_generate``    |
| judge      | ``multi_judge``                    | ``single_judge``       |

*Generate* verifiers write their own answer and reward the candidates that agree with it;
*judge* verifiers give each candidate a verdict. All share :class:`ModelVerifier`'s batching:
every verifier prompt of every question of a round is decoded in one engine call.
"""

from __future__ import annotations

from lm_eval_softreason.scoring.verifiers.base import ChatFormat, ModelVerifier
from lm_eval_softreason.scoring.verifiers.generate import MultiGenerate, SingleGenerate
from lm_eval_softreason.scoring.verifiers.judge import MultiJudge, SingleJudge

# model_arg verifier=<name>; "self" is the paper's default design, multi-generate.
MODEL_VERIFIERS: dict[str, type[ModelVerifier]] = {
    "self": MultiGenerate,
    "multi_generate": MultiGenerate,
    "single_generate": SingleGenerate,
    "multi_judge": MultiJudge,
    "single_judge": SingleJudge,
}

__all__ = ["MODEL_VERIFIERS", "ChatFormat", "ModelVerifier", "MultiGenerate", "SingleGenerate",
           "MultiJudge", "SingleJudge"]
