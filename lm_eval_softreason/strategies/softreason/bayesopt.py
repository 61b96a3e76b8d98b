"""One Bayesian-optimisation step with botorch: fit a GP to (u, reward), propose q points.

Kept free of model code so it can be tested (and benchmarked) on synthetic objectives.
:class:`Proposer` runs the steps of many questions, optionally in worker processes: once
decoding is fast (a GPU), the serial GP fits of a hundred questions dominate a round.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from botorch.acquisition.logei import qLogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood

log = logging.getLogger(__name__)

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


@dataclass
class ProposalRequest:
    """Everything one BO step needs (CPU tensors, so it can be sent to a worker process)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    bounds: torch.Tensor
    q: int
    seed: int


def _run(req: ProposalRequest) -> Proposal | Exception:
    """One step; its exception is returned, not raised, so it stays with its own question."""
    try:
        return propose(req.train_x, req.train_y, req.bounds, req.q, req.seed)
    except Exception as exc:
        return exc


class Proposer:
    """Answers a round's :class:`ProposalRequest` s, in order, one result per request.

    ``workers`` <= 1 runs them here one after another. More starts that many processes (spawned
    once, on first use, reused for the whole run): each step is single-threaded and seeded, so
    the results are identical either way. A step's exception (e.g. :class:`GPFitError`) comes
    back as its result. If the pool breaks, the round is redone in-process. Thread-safe:
    steps run here take turns (each seeds torch's global RNG).
    """

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def map(self, requests: Sequence[ProposalRequest]) -> list[Proposal | Exception]:
        if self.workers <= 1:
            return self._here(requests)
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"))
            pool = self._pool
        try:
            return list(pool.map(_run, requests))
        except BrokenProcessPool as exc:
            log.warning("BO worker pool failed (%r); running this round in-process", exc)
            self.close()
            return self._here(requests)

    def _here(self, requests: Sequence[ProposalRequest]) -> list[Proposal | Exception]:
        with self._lock:
            return [_run(r) for r in requests]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
