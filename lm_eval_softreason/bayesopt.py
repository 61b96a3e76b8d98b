"""One Bayesian-optimisation step with botorch: fit a GP to (u, reward), propose q points.

Kept free of model code so it can be tested (and benchmarked) on synthetic objectives.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood

# Acquisition optimiser effort: enough for d=50, q=5 at a few hundred ms on 2 CPU cores.
NUM_RESTARTS = 4
RAW_SAMPLES = 128
MAXITER = 60


@contextmanager
def _single_thread() -> Iterator[None]:
    """GP fitting and acquisition are many tiny ops: one thread is ~5x faster than two on a
    2-core machine (and far faster when another process holds the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class Proposal:
    points: torch.Tensor  # [q, d]
    expected_improvement: float  # exp of the optimised qLogEI: the batch's expected gain


class GPFitError(RuntimeError):
    """The GP could not be fitted (e.g. degenerate data); the caller falls back."""


def propose(
    train_x: torch.Tensor, train_y: torch.Tensor, bounds: torch.Tensor, q: int, seed: int
) -> Proposal:
    """Fit ``SingleTaskGP`` (inputs normalised to the box, outcomes standardised) and maximise
    qLogEI over the box. Runs under its own RNG state so results depend only on ``seed``."""
    x = train_x.double()
    y = train_y.double().reshape(-1, 1)
    if not torch.isfinite(y).all():
        raise GPFitError("non-finite rewards")
    with torch.random.fork_rng(), warnings.catch_warnings(), _single_thread():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        try:
            model = SingleTaskGP(
                x, y,
                input_transform=Normalize(d=x.shape[-1], bounds=bounds.double()),
                outcome_transform=Standardize(m=1),
            )
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        except Exception as exc:  # botorch raises several types for ill-posed data
            raise GPFitError(f"GP fit failed: {exc}") from exc
        acq = qLogExpectedImprovement(model, best_f=y.max())
        points, value = optimize_acqf(
            acq, bounds=bounds.double(), q=q, num_restarts=NUM_RESTARTS,
            raw_samples=RAW_SAMPLES, options={"maxiter": MAXITER, "seed": seed},
        )
    ei = math.exp(float(value)) if math.isfinite(float(value)) else 0.0
    return Proposal(points=points.float().detach(), expected_improvement=ei)
