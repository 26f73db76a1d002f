"""Samplers over a denoiser ``D(x_t, t) -> x̂0``: small step functions with an explicit carry.

A sampler is any object with ``eta`` and ``step(x, denoised, alpha_bar, alpha_bar_next, carry,
generator) -> (x_next, carry)``. The same objects drive the inner process of nested diffusion and
the vanilla baseline; :func:`sample` is the blocking loop.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence

import torch

from .ddim import DDIM, ddim_step
from .dpmpp import DPMSolverPP2M, DPMSolverPP3M
from .noise import randn_like

__all__ = ["Sampler", "DDIM", "DPMSolverPP2M", "DPMSolverPP3M", "SAMPLERS", "make_sampler", "sample", "iterate",
           "ddim_step", "randn_like"]


class Sampler(Protocol):
    eta: float

    def step(self, x: torch.Tensor, denoised: torch.Tensor, alpha_bar: float, alpha_bar_next: float,
             carry: Any = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]: ...


#: name -> (sampler class, default η, whether η is fixed by the name)
SAMPLERS: dict[str, tuple[type, float, bool]] = {
    "ddim": (DDIM, 0.0, False),
    "ddpm": (DDIM, 1.0, True),
    "dpmpp-2m": (DPMSolverPP2M, 0.0, False),
    "dpmpp-2m-sde": (DPMSolverPP2M, 1.0, True),
    "dpmpp-3m": (DPMSolverPP3M, 0.0, False),
    "dpmpp-3m-sde": (DPMSolverPP3M, 1.0, True),
}


def make_sampler(name: str, eta: float | None = None, *, argument: str = "sampler") -> Sampler:
    """Build a named sampler. ``eta=None`` takes the name's default (0 for "ddim"/"dpmpp-2m"/"dpmpp-3m")."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"{argument} must be one of {sorted(SAMPLERS)}, got {name!r}")
    cls, default_eta, fixed = SAMPLERS[name]
    if eta is None:
        eta = default_eta
    if isinstance(eta, bool) or not isinstance(eta, (int, float)):
        raise TypeError(f"{argument} eta must be a float in [0, 1], got {type(eta).__name__}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"{argument} eta must lie in [0, 1], got {eta}")
    if fixed and eta != default_eta:
        free = next(n for n, (c, _, f) in SAMPLERS.items() if c is cls and not f)
        raise ValueError(f"{argument} {name!r} fixes eta = {default_eta}; use {free!r} with eta={eta} instead")
    return cls(eta=float(eta))


def iterate(denoise: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, timesteps: Sequence[int],
            alphas_cumprod: Sequence[float], sampler: Sampler,
            generator: torch.Generator | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Run ``sampler`` over descending ``timesteps``, yielding ``(t, x̂0, x_next)`` per network call.

    The step after the last timestep goes to ᾱ = 1 (clean data), so the last ``x_next`` is the sample.
    """
    carry = None
    for i, t in enumerate(timesteps):
        denoised = denoise(x, t)
        alpha_bar_next = alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
        x, carry = sampler.step(x, denoised, alphas_cumprod[t], alpha_bar_next, carry, generator)
        yield t, denoised, x


def sample(denoise: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, timesteps: Sequence[int],
           alphas_cumprod: Sequence[float], sampler: Sampler, generator: torch.Generator | None = None) -> torch.Tensor:
    """The blocking sampler: drain :func:`iterate` and return the final sample."""
    for _, _, x in iterate(denoise, x, timesteps, alphas_cumprod, sampler, generator):
        pass
    return x
