"""The search pieces without a language model: projection, BO, stopping and selection."""

from __future__ import annotations

import pytest
import torch

from lm_eval_softreason.strategies.softreason.bayesopt import propose
from lm_eval_softreason.strategies.config import SoftReasonConfig
from lm_eval_softreason.strategies.softreason.perturbation import EmbeddingSpace
from lm_eval_softreason.scoring.candidate import Generation
from lm_eval_softreason.scoring.selection import majority, majority_holder, rank


def space(**kwargs) -> EmbeddingSpace:
    cfg, _ = SoftReasonConfig.from_kwargs(kwargs)
    return EmbeddingSpace(torch.ones(256) * 0.1, cfg, torch.Generator().manual_seed(0), 0.02)


def test_perturb_space_matches_paper_initial_design():
    s = space(sigma=0.5, proj_dim=50)
    assert torch.equal(s.to_vector(torch.zeros(50)), s.anchor)  # zero noise: greedy token
    u = s.initial_points(400)
    noise = torch.stack([s.to_vector(x) for x in u]) - s.anchor
    assert noise.std().item() == pytest.approx(0.5, rel=0.1)  # x = z + sigma * eps
    assert noise.mean().abs().item() < 0.05


def test_sigma_relative_to_embedding_std_and_reference_space():
    rel = space(sigma=2.0, sigma_scale="embedding_std")
    assert rel.sigma == pytest.approx(0.04)
    ref = space(preset="reference")
    assert torch.equal(ref.bounds[0], torch.zeros(50)) and torch.equal(ref.bounds[1], torch.ones(50))
    u = ref.random_points(3)
    assert ((u >= 0) & (u <= 1)).all()
    assert torch.allclose(ref.to_vector(u[0]), u[0] @ ref.projection)  # A^T u, no anchor


def _run(objective, d, seed, use_bo):
    gen = torch.Generator().manual_seed(seed)
    bounds = torch.tensor([[-3.0] * d, [3.0] * d])
    x = torch.randn(5, d, generator=gen).clamp(-3, 3)
    y = objective(x)
    for r in range(4):  # the default budget: 5 initial points + 4 rounds of 5
        if use_bo:
            nxt = propose(x, y, bounds, q=5, seed=seed * 10 + r).points
        else:
            nxt = torch.randn(5, d, generator=gen).clamp(-3, 3)
        x, y = torch.cat([x, nxt]), torch.cat([y, objective(nxt)])
    return y.max().item()


@pytest.mark.slow
def test_bo_beats_random_search_at_equal_budget_over_seeds():
    d = 4
    target = torch.linspace(-1.5, 1.5, d)

    def objective(x):
        return -((x - target) ** 2).sum(-1)

    seeds = range(8)
    bo = [_run(objective, d, s, True) for s in seeds]
    rnd = [_run(objective, d, s, False) for s in seeds]
    wins = sum(b > r for b, r in zip(bo, rnd))
    # Sign test: 7+ wins of 8 has p < 0.04 under "BO is no better than random".
    assert wins >= 7, (bo, rnd)
    assert sum(bo) / len(bo) > sum(rnd) / len(rnd)


def test_propose_is_deterministic_given_seed():
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    y = -(x ** 2).sum(-1)
    b = torch.tensor([[-3.0] * 4, [3.0] * 4])
    assert torch.equal(propose(x, y, b, 3, seed=5).points, propose(x, y, b, 3, seed=5).points)


def test_majority_normalises_numbers_and_ignores_invalid():
    assert majority(["18", "18.0", None, "17", "$18"]) == "18"
    assert majority([None, None]) is None
    assert majority(["7", "8"]) == "7"  # ties go to the first seen


def test_rank_best_and_vote():
    gens = [
        Generation("a", 3, answer="5", reward=1.2, r_coherence=0.2),
        Generation("b", 3, answer="6", reward=1.5, r_coherence=0.5),
        Generation("c", 3, answer="5.0", reward=0.3, r_coherence=0.3),
        Generation("d", 3, answer="6", reward=1.5, r_coherence=0.6),
    ]
    assert [g.text for g in rank(gens, "best")] == ["d", "b", "a", "c"]  # tie -> coherence
    assert rank(gens, "vote", verifier_answers=["6", "6"])[0].text == "d"  # 6: 4 votes vs 2
    assert rank(gens, "vote")[0].text == "a"  # 2-2 tie goes to the first-seen answer, 5
    # only vote counts the verifier's answers
    assert rank(gens, "vote_candidates", verifier_answers=["6", "6"])[0].text == "a"
    # weighted: 5 holds coherence 0.2 + 0.3, 6 holds 0.5 + 0.6
    assert rank(gens, "vote_coherence_weighted")[0].text == "d"


@pytest.mark.parametrize("answers, expected", [
    (["1", "2", "2", "1"], 0),  # a tie goes to the answer seen first; its first holder
    (["x", "2", "2.0", "1"], 1),  # normalised: "2" and "2.0" are one answer
    ([None, "3", None], 1),  # unparsed answers never vote
    ([None, None], 0),  # nothing parsed: the first sample
])
def test_majority_holder_is_the_first_sample_holding_the_majority(answers, expected):
    assert majority_holder(answers) == expected
