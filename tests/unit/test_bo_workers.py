"""BO steps in worker processes (``bo_workers``) give exactly the in-process results."""

from __future__ import annotations

import pytest
import torch

from lm_eval_softreason.strategies.softreason.bayesopt import GPFitError, Proposal, ProposalRequest, Proposer
from tests.helpers import QUESTIONS, request


def _requests() -> list[ProposalRequest]:
    g = torch.Generator().manual_seed(3)
    bounds = torch.tensor([[-3.0] * 6, [3.0] * 6])
    reqs = []
    for i in range(3):
        x = torch.randn(7, 6, generator=g)
        reqs.append(ProposalRequest(x, -(x - 0.5 * i).pow(2).sum(-1), bounds, q=2, seed=i))
    bad_y = torch.tensor([0.1, float("nan"), 0.3, 0.2, 0.5, 0.4, 0.0])
    reqs.append(ProposalRequest(torch.randn(7, 6, generator=g), bad_y, bounds, q=2, seed=9))
    return reqs


@pytest.mark.slow
def test_pool_matches_in_process_and_keeps_order_and_errors():
    reqs = _requests()
    serial = Proposer(workers=0).map(reqs)
    pool = Proposer(workers=2)
    try:
        parallel = pool.map(reqs)
    finally:
        pool.close()
    assert [type(r) for r in parallel] == [Proposal, Proposal, Proposal, GPFitError]
    for a, b in zip(serial[:3], parallel[:3]):
        assert torch.equal(a.points, b.points)
        assert a.expected_improvement == b.expected_improvement
    assert str(serial[3]) == str(parallel[3])


def test_model_answers_do_not_depend_on_bo_workers(configure):
    reqs = [request(q) for q in QUESTIONS]
    lm = configure()
    serial = lm.generate_until(reqs)
    serial_rounds = lm.get_model_info()["softreason_stats"]["rounds"]
    # the comparison only means something if some question reached a BO round
    assert serial_rounds > len(QUESTIONS)
    lm = configure(bo_workers=2)
    assert lm.generate_until(reqs) == serial
    assert lm.get_model_info()["softreason_stats"]["rounds"] == serial_rounds
