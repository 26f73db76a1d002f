"""UniPC (Zhao et al. 2023, Alg. 2): a multistep predictor (UniP) and a corrector (UniC) that reuses the
network call the next step makes anyway, so the correction costs no NFE.

Data-prediction form with B(h) = e^{h} - 1 (diffusers' ``solver_type="bh2"``, its default), order 2, as
``UniPCMultistepScheduler`` runs it by default (``predict_x0=True``, ``lower_order_final=True``, the
corrector on every step but the first). With λ = log(α/σ), a step from level s to level t (h = λ_t - λ_s,
φ = e^{-h} - 1 = B):

    UniP:  x_t = (σ_t/σ_s) x_s - α_t φ D_s - α_t B · ½ (D_s - D_r)/r_p,     r_p = (λ_r - λ_s)/h
    UniC:  x_t ← (σ_t/σ_s) x_s - α_t φ D_s - α_t B (ρ_0 (D_r - D_s)/r_c + ρ_1 (D_t - D_s))

where D are the denoiser's x̂0 at the levels named (r the level before s), x_s in UniC is the state the
predictor started from (already corrected), D_t the x̂0 at the predicted x_t, and ρ solves
[[1, 1], [r_c, 1]] ρ = (b_1, b_2) with b_1 = (φ/(-h) - 1)/B, b_2 = 2((φ/(-h) - 1)/(-h) - ½)/B (ρ = (½) when the
previous step was first order). The first step is first order (no history), and so is a step to the clean
end (σ_t = 0: x_t = D_s) — diffusers' warm-up and ``lower_order_final``. λ = -∞ at pure noise (the flow
start) makes h = ∞: φ = B = -1, b = (1, 1), and a difference quotient over an infinite step is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..schedules import Level


#: What a UniPC step hands the next one, plain tuples and floats (so a session's fork indexes its tensors
#: by row): (x the predictor started from — corrected —, its σ and λ, the x̂0 there, the predictor's
#: order, and (x̂0, λ) one level further back or None). The corrector of the next step reads all of it.
_History = tuple


def _phi(h: float) -> tuple[float, float, float]:
    """(φ = B = e^{-h} - 1, b_1, b_2) of a step of log-SNR length h (h = ∞: the limits -1, 1, 1)."""
    if math.isinf(h):
        return -1.0, 1.0, 1.0
    hh = -h
    phi = math.expm1(hh)
    k1 = phi / hh - 1.0
    k2 = k1 / hh - 0.5
    return phi, k1 / phi, 2.0 * k2 / phi


def _ratio(lam_r: float, lam_s: float, h: float) -> float:
    """r = (λ_r - λ_s)/h, the previous step's length in units of this one (-∞ after an infinite step)."""
    if math.isinf(lam_r) or math.isinf(h):
        return -math.inf
    return (lam_r - lam_s) / h


@dataclass(frozen=True)
class UniPC:
    """UniPC-2 with the bh2 corrector; deterministic (``eta`` is 0). ``carry`` is the previous step's
    ``(x, σ, λ, x̂0, order, earlier)`` (see ``_History``) or ``None`` before the first step."""

    eta: float = 0.0

    def step(self, x: torch.Tensor, denoised: torch.Tensor, level: Level, next_level: Level,
             carry: Any = None, generator: Any = None) -> tuple[torch.Tensor, Any]:
        earlier = None
        if carry is not None:  # UniC: correct x with the x̂0 just computed there (no network call)
            x = self._correct(carry, denoised, level)  # replaces the predicted x
            earlier = (carry[3], carry[2])
        order = 1 if earlier is None or next_level.sigma == 0 else 2
        h = next_level.log_snr - level.log_snr
        phi, _, _ = _phi(h)
        alpha_t, sigma_t = next_level
        x_next = (sigma_t / level.sigma) * x - alpha_t * phi * denoised
        if order == 2:
            r = _ratio(earlier[1], level.log_snr, h)
            if math.isfinite(r):
                x_next = x_next - alpha_t * phi * 0.5 * ((earlier[0] - denoised) / r)
        return x_next, (x, level.sigma, level.log_snr, denoised, order, earlier)

    @staticmethod
    def _correct(carry: _History, denoised: torch.Tensor, level: Level) -> torch.Tensor:
        x_s, sigma_s, lam_s, d_s, order, earlier = carry
        h = level.log_snr - lam_s
        phi, b1, b2 = _phi(h)
        alpha_t, sigma_t = level
        base = (sigma_t / sigma_s) * x_s - alpha_t * phi * d_s
        if order == 1 or earlier is None:
            return base - alpha_t * phi * 0.5 * (denoised - d_s)
        d_r, lam_r = earlier
        r = _ratio(lam_r, lam_s, h)
        if math.isinf(r):  # the earlier step was infinite: its difference quotient vanishes, ρ = (0, b_1)
            return base - alpha_t * phi * b1 * (denoised - d_s)
        rho0 = (b1 - b2) / (1.0 - r)
        rho1 = b1 - rho0
        return base - alpha_t * phi * (rho0 * ((d_r - d_s) / r) + rho1 * (denoised - d_s))
