"""Same-model verifiers: the paper's four designs, ``{multi,single}_{generate,judge}``.

*Generate* verifiers answer themselves and reward the candidates that agree; *judge* verifiers
give each candidate a verdict; ``multi_`` reads a round's candidates in one call, ``single_``
each alone. All share :class:`ModelVerifier`'s batching: one engine call per round.
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
