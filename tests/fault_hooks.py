"""Test-only plug-ins for the fault-injection tests (model_arg import paths)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lm_eval_softreason.scoring.verification import VerifyRequest

HOLD_ENV = "SOFTREASON_TEST_HOLD"
HOLD_LIMIT_S = 300.0


def hold_until_released(request: VerifyRequest) -> list[float]:
    """A verifier that keeps its run going, trace and ``--use_cache`` open, until the test
    says: it creates ``$SOFTREASON_TEST_HOLD/held`` and waits for
    ``$SOFTREASON_TEST_HOLD/release`` (at most five minutes); rewards nothing."""
    folder = Path(os.environ[HOLD_ENV])
    (folder / "held").touch()
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return [0.0] * len(request.candidates)
