"""Noise schedules, timestep grids and prediction-type conversions (VP / DDPM parameterisation).

Conventions (Ho et al. 2020; Song et al. 2021, DDIM): a training schedule is the 1-D tensor
``alphas_cumprod`` ᾱ_t, t = 0..T-1, and ``x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε``. A *denoiser* maps
``(x_t, t)`` to x̂0 = E[x0 | x_t] (k-diffusion's convention); every sampler in this package is a
small function over a denoiser, and a nested denoiser is just another denoiser.
"""

from __future__ import annotations

import math
import torch

__all__ = [
    "PREDICTION_TYPES",
    "check_alphas_cumprod",
    "spaced_timesteps",
    "make_alphas_cumprod",
    "to_denoised",
    "from_denoised",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Validate a training schedule and return it as a CPU float64 tensor.

    ᾱ must be 1-D with at least two entries, every value in (0, 1], non-increasing in t.
    """
    if not isinstance(alphas_cumprod, torch.Tensor):
        try:
            alphas_cumprod = torch.as_tensor(alphas_cumprod)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"alphas_cumprod must be a 1-D tensor, got {type(alphas_cumprod).__name__}") from e
    if alphas_cumprod.ndim != 1 or alphas_cumprod.numel() < 2:
        raise ValueError(f"alphas_cumprod must be a 1-D tensor of length T >= 2, got shape {tuple(alphas_cumprod.shape)}")
    if not (alphas_cumprod.is_floating_point()):
        raise TypeError(f"alphas_cumprod must be floating point, got {alphas_cumprod.dtype}")
    a = alphas_cumprod.detach().to("cpu", torch.float64)
    if not torch.isfinite(a).all() or (a <= 0).any() or (a > 1).any():
        raise ValueError(
            f"alphas_cumprod values must lie in (0, 1], got min {a.min().item():.3g}, max {a.max().item():.3g}")
    if (a[1:] > a[:-1]).any():
        raise ValueError("alphas_cumprod must be non-increasing in t (ᾱ_0 is the cleanest timestep)")
    return a


def spaced_timesteps(start: int, steps: int, power: float = 1.0) -> list[int]:
    """``steps`` integer timesteps from ``start`` down towards 0 (descending).

    The first is ``start`` itself; the grid is diffusers' "trailing" spacing generalised to any
    start: ``t_i = round((start + 1)(steps - i) / steps) - 1``, i = 0..steps-1, so with
    ``start = T - 1`` it equals ``DDIMScheduler(timestep_spacing="trailing")`` (e.g. 999, 899, …,
    99). ``power`` p > 1 bends it towards 0 like DDIM's "quadratic" selection (p = 2, Song et al.
    2021, App. D.2): ``t_i = round((start + 1)((steps - i) / steps)^p) - 1``, raised where needed so
    the timesteps stay distinct. At most ``start + 1`` timesteps are returned (all of them when
    ``steps > start``) — a sampler started at τ costs ``min(steps, τ + 1)`` network evaluations.
    """
    if steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if start < 0:
        raise ValueError(f"start must be a non-negative timestep, got {start}")
    if not power >= 1.0:
        raise ValueError(f"power must be >= 1 (1: evenly spaced), got {power}")
    if steps > start:
        return list(range(start, -1, -1))
    grid = [max(0, round((start + 1) * (steps - i) ** power / steps ** power) - 1) for i in range(steps)]
    for i in range(steps - 2, -1, -1):  # bottom-up: at least one timestep apart
        grid[i] = max(grid[i], grid[i + 1] + 1)
    return grid


def make_alphas_cumprod(schedule: str = "linear", num_train_timesteps: int = 1000) -> torch.Tensor:
    """ᾱ_t (float64) for the standard training schedules, as diffusers defines them.

    ``"linear"``: β from 1e-4 to 0.02 (Ho et al. 2020). ``"scaled_linear"``: √β linear from
    √0.00085 to √0.012 (Stable Diffusion). ``"cosine"``: ``squaredcos_cap_v2`` (Nichol & Dhariwal
    2021, eq. 17, β capped at 0.999).
    """
    T = num_train_timesteps
    if T < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {T}")
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    else:
        raise ValueError(f"schedule must be 'linear', 'scaled_linear' or 'cosine', got {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


def to_denoised(output: torch.Tensor, x: torch.Tensor, alpha_bar: float | torch.Tensor,
                prediction_type: str) -> torch.Tensor:
    """x̂0 from a network output (epsilon: x̂0 = (x - √(1-ᾱ) ε̂)/√ᾱ; v: x̂0 = √ᾱ x - √(1-ᾱ) v̂).

    ``alpha_bar`` is a float or a tensor broadcastable against ``x`` (one ᾱ per sample).
    """
    if prediction_type == "epsilon":
        return (x - (1.0 - alpha_bar) ** 0.5 * output) / alpha_bar**0.5
    if prediction_type == "v_prediction":
        return alpha_bar**0.5 * x - (1.0 - alpha_bar) ** 0.5 * output
    if prediction_type == "sample":
        return output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def from_denoised(denoised: torch.Tensor, x: torch.Tensor, alpha_bar: float | torch.Tensor,
                  prediction_type: str) -> torch.Tensor:
    """Inverse of :func:`to_denoised`: the network output that yields ``denoised`` at ``x``."""
    if prediction_type == "sample":
        return denoised
    eps = (x - alpha_bar**0.5 * denoised) / (1.0 - alpha_bar) ** 0.5
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        return alpha_bar**0.5 * eps - (1.0 - alpha_bar) ** 0.5 * denoised
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")

