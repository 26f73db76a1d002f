"""DDIM with η (Song et al. 2021, eq. 12) on any schedule; η = 1 is DDPM's ancestral sampler and,
on a flow schedule, η = 0 is Euler on the velocity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..schedules import Level, _as_level
from .noise import randn_like


@dataclass(frozen=True)
class DDIM:
    """One DDIM step from level (α, σ) to (α', σ') given the denoiser's x̂0 (see :func:`ddim_step`)."""

    eta: float = 0.0

    def step(self, x: torch.Tensor, denoised: torch.Tensor, level: Level, next_level: Level,
             carry: Any = None, generator: Any = None) -> tuple[torch.Tensor, Any]:
        return ddim_step(x, denoised, level, next_level, self.eta, generator), None


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, level: Level | float, next_level: Level | float,
              eta: float = 0.0, generator: Any = None) -> torch.Tensor:
    """DDIM update (Song et al. 2021, eq. 12) in (α, σ):

        ε̂ = (x - α x̂0)/σ,   c = η σ' √(1 - (σ'α / (α'σ))²),   x' = α' x̂0 + √(σ'² - c²) ε̂ + c z.

    c is DDPM's posterior std (η = 1) in the variance-exploding variables x/α, so the step is the same
    for VP (α² + σ² = 1; c = η √((1-ᾱ')/(1-ᾱ)) √(1-ᾱ/ᾱ')) and flow schedules. Levels may be given as VP
    ᾱ values. At σ' = 0 (clean) it returns x̂0; from α = 0 (pure noise) ε̂ is x/σ.
    """
    (a, s), (a_next, s_next) = _as_level(level), _as_level(next_level)
    eps = (x - a * denoised) / s
    ratio = s_next * a / (a_next * s) if s_next > 0 else 0.0
    c = eta * s_next * math.sqrt(max(1.0 - ratio * ratio, 0.0))
    x_next = a_next * denoised + math.sqrt(max(s_next**2 - c**2, 0.0)) * eps
    if c > 0:
        x_next = x_next + c * randn_like(x_next, generator)
    return x_next
