"""DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) with an η that blends in its SDE variant.

In VP terms, with α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ) and h = λ_next - λ_t:

    x_next = (σ_next/σ_t) e^{-ηh} x_t + α_next (1 - e^{-(1+η)h}) D + σ_next √(1 - e^{-2ηh}) z

η = 0 is the deterministic DPM-Solver++(2M); η = 1 is DPM-Solver++(2M) SDE (diffusers'
``algorithm_type="sde-dpmsolver++"``); in between follows k-diffusion's ``sample_dpmpp_2m_sde``.
D is x̂0 on the first step and the midpoint second-order correction
D = x̂0 + (x̂0 - x̂0_prev) / (2r), r = h_prev / h, afterwards. The last step (to ᾱ = 1) returns x̂0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .noise import randn_like


@dataclass(frozen=True)
class DPMSolverPP2M:
    """Multistep sampler; ``carry`` is ``(previous x̂0, previous h)`` or ``None`` on the first step."""

    eta: float = 0.0

    def step(self, x: torch.Tensor, denoised: torch.Tensor, alpha_bar: float, alpha_bar_next: float,
             carry: Any = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:
        if alpha_bar_next >= 1.0:
            return denoised, None
        alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        alpha_next, sigma_next = math.sqrt(alpha_bar_next), math.sqrt(1.0 - alpha_bar_next)
        h = math.log(alpha_next / sigma_next) - math.log(alpha / sigma)
        d = denoised
        if carry is not None:
            denoised_prev, h_prev = carry
            d = denoised + (denoised - denoised_prev) * (h / (2.0 * h_prev))
        x_next = (sigma_next / sigma * math.exp(-self.eta * h)) * x - alpha_next * math.expm1(-(1.0 + self.eta) * h) * d
        if self.eta > 0:
            x_next = x_next + sigma_next * math.sqrt(-math.expm1(-2.0 * self.eta * h)) * randn_like(x_next, generator)
        return x_next, (denoised, h)
