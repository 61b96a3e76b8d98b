"""The two terms of Soft Reasoning's objective, as pluggable callables.

``f(y) = w_v * r_verifier(y) + w_c * r_coherence(y)``. Both terms are chosen by model_arg: a
built-in name, an import path ``package.module:function``, or (Python API) a callable. Their
signatures are the Protocols below.
"""

from __future__ import annotations

import importlib
import inspect
import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

from lm_eval_softreason.errors import ConfigError


@runtime_checkable
class CoherenceFn(Protocol):
    """Score one candidate from its per-token log-probabilities (higher = more coherent)."""

    def __call__(self, logprobs: Sequence[float]) -> float: ...


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


# --- coherence ----------------------------------------------------------------------------

def geo_mean_prob(logprobs: Sequence[float]) -> float:
    """exp(mean log p): the paper's sum of log-probs, length-normalised and mapped to [0, 1].

    Normalising by length stops the objective from rewarding short (often truncated) answers;
    the exp keeps the term on the verifier's [0, 1] scale so verifier agreement dominates.
    """
    return math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


def mean_logprob(logprobs: Sequence[float]) -> float:
    """Mean token log-probability (length-normalised, unbounded below)."""
    return sum(logprobs) / len(logprobs) if logprobs else -math.inf


def sum_logprob(logprobs: Sequence[float]) -> float:
    """The paper's Σ log p(w_t) as written (favours shorter answers)."""
    return float(sum(logprobs))


def mean_prob(logprobs: Sequence[float]) -> float:
    """Mean token probability, as in the reference code."""
    return sum(math.exp(x) for x in logprobs) / len(logprobs) if logprobs else 0.0


def no_coherence(logprobs: Sequence[float]) -> float:
    """Ablation: drop the coherence term."""
    return 0.0


COHERENCE: dict[str, CoherenceFn] = {
    "geo_mean_prob": geo_mean_prob,
    "mean_logprob": mean_logprob,
    "sum_logprob": sum_logprob,
    "mean_prob": mean_prob,
    "none": no_coherence,
}

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


def import_callable(spec: str, option: str) -> Callable:
    """Resolve ``package.module:function`` with errors that say which part is wrong.

    ``option`` is how the message names the setting and its value (``model_arg
    coherence='m:f'``, ``--select 'm:f'``): the model and the CLIs share one wording.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{option}: not a built-in name and not an import path of the form "
            f"'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{option}: cannot import {module_name!r} ({exc})") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{option}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{option}: {attr!r} is not callable")
    return target


def check_takes_one_argument(fn: Callable, option: str, documented: str) -> None:
    """Refuse at load time a plug-in that could not be called the documented way; found
    only at call time, every question would fall back to greedy. ``option`` as in
    :func:`import_callable`."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: cannot tell, accept
        return
    try:
        signature.bind(object())
    except TypeError:
        params = ", ".join(signature.parameters)
        raise ConfigError(
            f"{option}: it takes ({params}), so it cannot be called as {documented}"
        ) from None


def _display(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"


def resolve_coherence(spec: str | Callable) -> CoherenceFn:
    """A coherence function from a name, an import path or a callable."""
    if not callable(spec) and spec in COHERENCE:
        return COHERENCE[spec]
    if not callable(spec) and ":" not in spec:
        raise ConfigError(
            f"model_arg coherence={spec!r} is unknown; built-ins: {', '.join(COHERENCE)}, "
            f"or an import path 'package.module:function'"
        )
    fn = spec if callable(spec) else import_callable(spec, f"model_arg coherence={spec!r}")
    check_takes_one_argument(fn, f"model_arg coherence={_display(fn)}",
                             "fn(logprobs: list[float]) -> float")
    return fn  # type: ignore[return-value]


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
                                 f"model_arg verifier={_display(target.verify_many)}",
                                 "verifier.verify_many(requests: list[VerifyRequest])")
    elif not isinstance(target, type):
        check_takes_one_argument(target, f"model_arg verifier={_display(target)}",
                                 "fn(request: VerifyRequest)")
    return target


def as_batch_verifier(target: Callable | object) -> BatchVerifier:
    """Wrap a callable (or pass through an object with ``verify_many``)."""
    if hasattr(target, "verify_many"):
        return target  # type: ignore[return-value]
    return PerQuestionVerifier(target)  # type: ignore[arg-type]
