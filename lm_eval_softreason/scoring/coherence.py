"""The coherence term of Soft Reasoning's objective, ``f(y) = w_v * r_verifier(y) + w_c *
r_coherence(y)``: a built-in name, an import path ``package.module:function`` or a callable."""

from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence, runtime_checkable

from lm_eval_softreason.errors import ConfigError
from lm_eval_softreason.scoring.plugins import check_takes_one_argument, display, import_callable


@runtime_checkable
class CoherenceFn(Protocol):
    """Score one candidate from its per-token log-probabilities (higher = more coherent)."""

    def __call__(self, logprobs: Sequence[float]) -> float: ...


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
    check_takes_one_argument(fn, f"model_arg coherence={display(fn)}",
                             "fn(logprobs: list[float]) -> float")
    return fn  # type: ignore[return-value]
