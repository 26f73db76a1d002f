"""DPM-Solver++(2M) and (3M) (Lu et al. 2022, Alg. 2 and its third-order multistep form) with an η
that blends in their SDE variants, on any schedule.

With λ = log(α/σ), h = λ' - λ and h_η = (1 + η) h, one step from level (α, σ) to (α', σ') is

    x' = (σ'/σ) e^{-ηh} x + α' (φ1 D0 + φ2 D1 - φ3 D2) + σ' √(1 - e^{-2ηh}) z
    φ1 = 1 - e^{-h_η},   φ2 = 1 - φ1/h_η,   φ3 = φ2/h_η - 1/2

η = 0 is the deterministic solver; η = 1 is its SDE variant (diffusers' ``algorithm_type=
"sde-dpmsolver++"``); in between follows k-diffusion's ``sample_dpmpp_2m_sde`` / ``_3m_sde``. D0 is
the current x̂0; D1 and D2 are the first and second divided differences of the last x̂0s in λ
(multistep: they cost no network call). λ = -∞ at pure noise (α = 0: the flow start) and +∞ at the
clean end (σ' = 0); h = ∞ makes a step first order (the limit of every formula here: x' = x̂0 at the
clean end, as diffusers' ``lower_order_final`` and k-diffusion's last step), and a previous h = ∞
makes its divided difference 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..schedules import Level
from .noise import randn_like


def _coefficients(level: Level, next_level: Level, eta: float) -> tuple[float, float, float, float, float]:
    """(h, x-coefficient (σ'/σ) e^{-ηh}, α', h_η, noise scale σ'√(1-e^{-2ηh})) of one exponential-integrator step."""
    sigma, (alpha_next, sigma_next) = level.sigma, next_level
    h = next_level.log_snr - level.log_snr
    decay = math.exp(-eta * h) if eta > 0 else 1.0  # e^{-ηh}, 0 for h = ∞
    noise = sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h)) if eta > 0 and sigma_next > 0 else 0.0
    return h, sigma_next / sigma * decay, alpha_next, (1.0 + eta) * h, noise


def _finish(x_next: torch.Tensor, noise: float, generator: Any) -> torch.Tensor:
    return x_next + noise * randn_like(x_next, generator) if noise > 0 else x_next


@dataclass(frozen=True)
class DPMSolverPP2M:
    """Multistep sampler; ``carry`` is ``(previous x̂0, previous h)`` or ``None`` on the first step.

    The second-order term is the midpoint form, D0 + (D0 - D_prev) h / (2 h_prev) (diffusers'
    ``solver_type="midpoint"``, k-diffusion's default)."""

    eta: float = 0.0

    def step(self, x: torch.Tensor, denoised: torch.Tensor, level: Level, next_level: Level,
             carry: Any = None, generator: Any = None) -> tuple[torch.Tensor, Any]:
        h, cx, alpha_next, h_eta, noise = _coefficients(level, next_level, self.eta)
        d = denoised
        if carry is not None and math.isfinite(h):  # midpoint correction D0 + (D0 - D_prev) h / (2 h_prev)
            denoised_prev, h_prev = carry
            d = denoised + (denoised - denoised_prev) * (h / (2.0 * h_prev))
        x_next = cx * x - alpha_next * math.expm1(-h_eta) * d
        return _finish(x_next, noise, generator), (denoised, h)


@dataclass(frozen=True)
class DPMSolverPP3M:
    """Third-order multistep sampler; ``carry`` is the tuple of up to two earlier ``(x̂0, h)``.

    Follows k-diffusion's ``sample_dpmpp_3m_sde`` at every η: the first step is first order, the second
    adds φ2 (D0 - D_prev)/r (the exponential-integrator second-order term, diffusers'
    ``solver_type="heun"``), later steps the third-order multistep term. Parity: k-diffusion for
    η ∈ [0, 1]; diffusers' ``DPMSolverMultistepScheduler(solver_order=3, solver_type="heun")`` for
    η = 0 (grids of >= 15 steps, where diffusers does not drop to second order before the end).
    """

    eta: float = 0.0

    def step(self, x: torch.Tensor, denoised: torch.Tensor, level: Level, next_level: Level,
             carry: Any = None, generator: Any = None) -> tuple[torch.Tensor, Any]:
        h, cx, alpha_next, h_eta, noise = _coefficients(level, next_level, self.eta)
        history = carry or ()
        x_next = cx * x - alpha_next * math.expm1(-h_eta) * denoised
        if math.isfinite(h) and history:
            phi2 = math.expm1(-h_eta) / h_eta + 1.0
            if len(history) == 1:  # warm-up: the second-order term from one earlier x̂0
                (denoised_1, h_1), = history
                x_next = x_next + alpha_next * phi2 * ((denoised - denoised_1) / (h_1 / h))
            else:
                (denoised_2, h_2), (denoised_1, h_1) = history
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi3 = phi2 / h_eta - 0.5
                x_next = x_next + alpha_next * (phi2 * d1 - phi3 * d2)
        return _finish(x_next, noise, generator), (history[-1:] + ((denoised, h),))
