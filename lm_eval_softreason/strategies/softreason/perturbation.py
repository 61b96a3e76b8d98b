"""The search space: a low-dimensional point ``u`` and the vector it injects into the model.

Searching the full embedding (D = 896 for Qwen2.5-0.5B) with a GP is hopeless at 25 evaluations,
so, as in the paper's code, a fixed random matrix A (d × D, seeded per question) projects the
search down to d dimensions.
"""

from __future__ import annotations

import math

import torch

from lm_eval_softreason.strategies.config import SoftReasonConfig


class EmbeddingSpace:
    """Maps points ``u ∈ R^d`` to first-position input vectors.

    ``inject="perturb"`` (paper): ``x = z + σ·Aᵀu/√d`` around the greedy first token's
    embedding ``z``. With ``u ~ N(0, I_d)`` the perturbation has per-dimension variance σ², so the
    initial design is exactly the paper's ``x = z + σε``; BO searches the box [-3, 3]^d.
    ``inject="replace"`` (reference code): ``x = σ·Aᵀu`` is fed as a virtual token, with
    ``u ~ N(0, I)`` initially and BO over the unit cube, as that code does.
    """

    def __init__(
        self,
        anchor: torch.Tensor,
        cfg: SoftReasonConfig,
        generator: torch.Generator,
        embedding_std: float,
    ) -> None:
        self.anchor = anchor.detach().float().cpu()
        self.cfg = cfg
        self.dim = cfg.proj_dim
        self.generator = generator
        scale = embedding_std if cfg.sigma_scale == "embedding_std" else 1.0
        self.sigma = cfg.sigma * scale
        self.projection = torch.randn(self.dim, self.anchor.numel(), generator=generator)
        if cfg.inject == "perturb":
            self.bounds = torch.tensor([[-3.0] * self.dim, [3.0] * self.dim])
        else:
            self.bounds = torch.tensor([[0.0] * self.dim, [1.0] * self.dim])

    def to_vector(self, u: torch.Tensor) -> torch.Tensor:
        """The injected vector for one point ``u`` (float32, on CPU)."""
        direction = u.float() @ self.projection
        if self.cfg.inject == "perturb":
            return self.anchor + self.sigma * direction / math.sqrt(self.dim)
        return self.sigma * direction

    def initial_points(self, n: int) -> torch.Tensor:
        """The initial design: ``u ~ N(0, I_d)`` (clipped to the box for ``perturb``)."""
        u = torch.randn(n, self.dim, generator=self.generator)
        if self.cfg.inject == "perturb":
            u = u.clamp(self.bounds[0], self.bounds[1])
        return u

    def random_points(self, n: int) -> torch.Tensor:
        """Points for the random-search ablation: the initial design's distribution again."""
        if self.cfg.inject == "perturb":
            return self.initial_points(n)
        return torch.rand(n, self.dim, generator=self.generator)
