"""Importable verifier/coherence plug-ins used by the tests (model_arg import paths)."""

from __future__ import annotations

import math

from lm_eval_softreason.scoring.verification import VerifyRequest

CALLS: list[VerifyRequest] = []


def always_first(request: VerifyRequest) -> list[float]:
    """Rewards only the first candidate; records what it was shown."""
    CALLS.append(request)
    return [1.0] + [0.0] * (len(request.candidates) - 1)


def raising_verifier(request: VerifyRequest) -> list[float]:
    raise RuntimeError("verifier exploded")


def nan_verifier(request: VerifyRequest) -> list[float]:
    return [math.nan] * len(request.candidates)


def raising_coherence(logprobs) -> float:
    raise RuntimeError("coherence exploded")


def inf_coherence(logprobs) -> float:
    return math.inf


def length_coherence(logprobs) -> float:
    return float(len(logprobs))


def two_argument_coherence(logprobs, length) -> float:
    """Not a CoherenceFn: needs a second argument."""
    return 0.0


def no_argument_verifier() -> list[float]:
    """Not a VerifierFn: takes no request."""
    return []


def blocks_the_output_path(request: VerifyRequest) -> list[float]:
    """Puts a regular file where ``$BLOCK_PATH`` names the run's output folder, mid-run, so
    lm-eval's save fails after every answer is in; rewards nothing."""
    import os
    from pathlib import Path

    Path(os.environ["BLOCK_PATH"]).touch()
    return [0.0] * len(request.candidates)
