"""The verifier term of Soft Reasoning's objective: what a verifier receives and returns, and
how model_arg ``verifier`` (a built-in name, an import path ``package.module:function`` or a
callable) is resolved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.scoring.plugins import check_takes_one_argument, display, import_callable


@dataclass
class VerifyRequest:
    """One question's round of candidates, as a verifier sees it (never the gold answer)."""

    question: str  # the task prompt exactly as the model saw it
    candidates: list[str]  # candidate texts of this round
    answers: list[str | None]  # each candidate's answer, extracted with the task's own filters
    task_name: str = ""


@dataclass
class VerifyResult:
    """Per-candidate rewards in [0, 1], plus what the verifier concluded (for votes and traces).

    A verifier that answers once per round sets ``verifier_answer``; one that answers several
    times (once per candidate) sets ``verifier_answers``, and one that only judges sets it to
    ``[]``.
    """

    rewards: list[float]
    verifier_answer: str | None = None
    analysis: str = ""
    tokens_generated: int = 0
    tokens_prefilled: int = 0
    verifier_answers: list[str | None] | None = None

    def votes(self) -> list[str | None]:
        """The verifier's answers, as ``select=vote`` counts them next to the candidates'."""
        return [self.verifier_answer] if self.verifier_answers is None else self.verifier_answers


@runtime_checkable
class VerifierFn(Protocol):
    """A per-question verifier: return one reward in [0, 1] per candidate."""

    def __call__(self, request: VerifyRequest) -> Sequence[float] | VerifyResult: ...


class BatchVerifier(Protocol):
    """A verifier that judges many questions at once (the built-in ``self`` verifier batches
    its own generation across questions); plain :class:`VerifierFn` s are wrapped into this."""

    def verify_many(self, requests: Sequence[VerifyRequest]) -> list[VerifyResult]: ...


# Built-in verifier names. All but "none" are the model itself (``verifiers/``), built by it;
# "self" is the paper's default design, multi_generate.
VERIFIERS = ("self", "multi_generate", "single_generate", "multi_judge", "single_judge", "none")


class NoVerifier:
    """Ablation: every candidate gets verifier reward 0, so only coherence ranks them."""

    def verify_many(self, requests: Sequence[VerifyRequest]) -> list[VerifyResult]:
        return [VerifyResult(rewards=[0.0] * len(r.candidates)) for r in requests]


class PerQuestionVerifier:
    """Adapts a user's per-question :class:`VerifierFn` to :class:`BatchVerifier`."""

    def __init__(self, fn: Callable[[VerifyRequest], Sequence[float] | VerifyResult]) -> None:
        self.fn = fn

    def verify_many(self, requests: Sequence[VerifyRequest]) -> list[VerifyResult]:
        out = []
        for req in requests:
            got = self.fn(req)
            result = got if isinstance(got, VerifyResult) else VerifyResult(rewards=list(got))
            if len(result.rewards) != len(req.candidates):
                raise ValueError(
                    f"verifier returned {len(result.rewards)} rewards for "
                    f"{len(req.candidates)} candidates"
                )
            out.append(result)
        return out


def resolve_verifier_spec(spec: str | Callable) -> str | Callable:
    """Check a verifier spec early; returns a built-in name or the imported callable.

    A class or factory with ``verify_many`` is used as a :class:`BatchVerifier`.
    """
    if not callable(spec) and spec in VERIFIERS:
        return spec
    if not callable(spec) and ":" not in spec:
        raise ConfigError(
            f"model_arg verifier={spec!r} is unknown; built-ins: {', '.join(VERIFIERS)}, "
            f"or an import path 'package.module:function'"
        )
    target = spec if callable(spec) else import_callable(spec, f"model_arg verifier={spec!r}")
    if hasattr(target, "verify_many") and not isinstance(target, type):
        check_takes_one_argument(target.verify_many,
                                 f"model_arg verifier={display(target.verify_many)}",
                                 "verifier.verify_many(requests: list[VerifyRequest])")
    elif not isinstance(target, type):
        check_takes_one_argument(target, f"model_arg verifier={display(target)}",
                                 "fn(request: VerifyRequest)")
    return target


def as_batch_verifier(target: Callable | object) -> BatchVerifier:
    """Wrap a callable (or pass through an object with ``verify_many``)."""
    if hasattr(target, "verify_many"):
        return target  # type: ignore[return-value]
    return PerQuestionVerifier(target)  # type: ignore[arg-type]
