"""DDIM with η (Song et al. 2021, eq. 12); η = 1 is DDPM's ancestral sampler."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .noise import randn_like


@dataclass(frozen=True)
class DDIM:
    """One DDIM step from ᾱ_t to ᾱ_next given the denoiser's x̂0.

    ε̂ = (x_t - √ᾱ_t x̂0) / √(1-ᾱ_t)
    σ = η √((1-ᾱ_next)/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_next)
    x_next = √ᾱ_next x̂0 + √(1-ᾱ_next-σ²) ε̂ + σ z
    """

    eta: float = 0.0

    def step(self, x: torch.Tensor, denoised: torch.Tensor, alpha_bar: float, alpha_bar_next: float,
             carry: Any = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:
        return ddim_step(x, denoised, alpha_bar, alpha_bar_next, self.eta, generator), None


def ddim_step(x: torch.Tensor, denoised: torch.Tensor, alpha_bar: float, alpha_bar_next: float,
              eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM update (eq. 12 of Song et al. 2021). ``alpha_bar_next = 1`` returns x̂0 itself."""
    if alpha_bar_next >= 1.0:
        return denoised
    eps = (x - math.sqrt(alpha_bar) * denoised) / math.sqrt(1.0 - alpha_bar)
    sigma = eta * math.sqrt((1.0 - alpha_bar_next) / (1.0 - alpha_bar)) * math.sqrt(1.0 - alpha_bar / alpha_bar_next)
    x_next = math.sqrt(alpha_bar_next) * denoised + math.sqrt(max(1.0 - alpha_bar_next - sigma**2, 0.0)) * eps
    if sigma > 0:
        x_next = x_next + sigma * randn_like(x_next, generator)
    return x_next
