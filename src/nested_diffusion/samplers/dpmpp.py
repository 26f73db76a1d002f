"""DPM-Solver++(2M) and (3M) (Lu et al. 2022, Alg. 2 and its third-order multistep form) with an η
that blends in their SDE variants.

In VP terms, with α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ), h = λ_next - λ_t and h_η = (1 + η) h:

    x_next = (σ_next/σ_t) e^{-ηh} x_t + α_next (φ1 D0 + φ2 D1 - φ3 D2) + σ_next √(1 - e^{-2ηh}) z
    φ1 = 1 - e^{-h_η},   φ2 = 1 - φ1/h_η,   φ3 = φ2/h_η - 1/2

η = 0 is the deterministic solver; η = 1 is its SDE variant (diffusers' ``algorithm_type=
"sde-dpmsolver++"``); in between follows k-diffusion's ``sample_dpmpp_2m_sde`` / ``_3m_sde``.
D0 is the current x̂0; D1 and D2 are the first and second divided differences of the last x̂0s in
λ (multistep: they cost no network call). The first step is first order, the second step of the
3M solver uses the 2M midpoint form, and the last step (to ᾱ = 1) returns x̂0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .noise import randn_like


def _coefficients(alpha_bar: float, alpha_bar_next: float, eta: float) -> tuple[float, float, float, float, float]:
    """(h, x-coefficient, α_next, h_η, noise scale) of one exponential-integrator step."""
    alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    alpha_next, sigma_next = math.sqrt(alpha_bar_next), math.sqrt(1.0 - alpha_bar_next)
    h = math.log(alpha_next / sigma_next) - math.log(alpha / sigma)
    noise = sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h)) if eta > 0 else 0.0
    return h, sigma_next / sigma * math.exp(-eta * h), alpha_next, (1.0 + eta) * h, noise


def _finish(x_next: torch.Tensor, noise: float, generator: torch.Generator | None) -> torch.Tensor:
    return x_next + noise * randn_like(x_next, generator) if noise > 0 else x_next


@dataclass(frozen=True)
class DPMSolverPP2M:
    """Multistep sampler; ``carry`` is ``(previous x̂0, previous h)`` or ``None`` on the first step."""

    eta: float = 0.0

    def step(self, x: torch.Tensor, denoised: torch.Tensor, alpha_bar: float, alpha_bar_next: float,
             carry: Any = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:
        if alpha_bar_next >= 1.0:
            return denoised, None
        h, cx, alpha_next, h_eta, noise = _coefficients(alpha_bar, alpha_bar_next, self.eta)
        d = denoised
        if carry is not None:  # midpoint correction D0 + (D0 - D_prev) h / (2 h_prev)
            denoised_prev, h_prev = carry
            d = denoised + (denoised - denoised_prev) * (h / (2.0 * h_prev))
        x_next = cx * x - alpha_next * math.expm1(-h_eta) * d
        return _finish(x_next, noise, generator), (denoised, h)


@dataclass(frozen=True)
class DPMSolverPP3M:
    """Third-order multistep sampler; ``carry`` is the tuple of up to two earlier ``(x̂0, h)``.

    Parity: diffusers' ``DPMSolverMultistepScheduler(solver_order=3, algorithm_type="dpmsolver++")``
    for η = 0 (grids of >= 15 steps, where diffusers does not drop to second order before the end).
    For η > 0 the third-order term follows k-diffusion's ``sample_dpmpp_3m_sde`` (φ3 = φ2/h_η - 1/2).
    """

    eta: float = 0.0

    def step(self, x: torch.Tensor, denoised: torch.Tensor, alpha_bar: float, alpha_bar_next: float,
             carry: Any = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:
        if alpha_bar_next >= 1.0:
            return denoised, None
        history = carry or ()
        if len(history) < 2:  # warm-up: first order, then the 2M midpoint step
            x_next, (_, h) = DPMSolverPP2M(self.eta).step(x, denoised, alpha_bar, alpha_bar_next,
                                                          history[-1] if history else None, generator)
            return x_next, history + ((denoised, h),)
        h, cx, alpha_next, h_eta, noise = _coefficients(alpha_bar, alpha_bar_next, self.eta)
        (denoised_2, h_2), (denoised_1, h_1) = history
        r0, r1 = h_1 / h, h_2 / h
        d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi1 = -math.expm1(-h_eta)
        phi2 = 1.0 - phi1 / h_eta
        phi3 = phi2 / h_eta - 0.5
        x_next = cx * x + alpha_next * (phi1 * denoised + phi2 * d1 - phi3 * d2)
        return _finish(x_next, noise, generator), (history[-1], (denoised, h))
