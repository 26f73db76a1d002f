"""Samplers over a denoiser ``D(x_t, t) -> x̂0``: small step functions with an explicit carry.

A sampler is any object with ``eta`` and ``step(x, denoised, level, next_level, carry, generator) ->
(x_next, carry)``, where levels are (α, σ) pairs (:class:`~nested_diffusion.schedules.Level`): samplers
never learn which kind of schedule they run on. The same objects drive the inner process of nested
diffusion and the vanilla baseline; :func:`sample` is the blocking loop.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, Sequence

import torch

from ..schedules import CLEAN, Level, Schedule, as_schedule
from .ddim import DDIM, ddim_step
from .dpmpp import DPMSolverPP2M, DPMSolverPP3M
from .noise import Generator, randn_like
from .renoise import Renoise
from .unipc import UniPC

__all__ = ["Sampler", "DDIM", "DPMSolverPP2M", "DPMSolverPP3M", "UniPC", "Renoise", "SAMPLERS", "make_sampler",
           "sample", "iterate", "ddim_step", "randn_like", "Generator", "sampler_name"]


class Sampler(Protocol):
    eta: float

    def step(self, x: torch.Tensor, denoised: torch.Tensor, level: Level, next_level: Level,
             carry: Any = None, generator: Generator = None) -> tuple[torch.Tensor, Any]: ...


#: name -> (sampler class, default η, whether η is fixed by the name)
SAMPLERS: dict[str, tuple[type, float, bool]] = {
    "ddim": (DDIM, 0.0, False),
    "ddpm": (DDIM, 1.0, True),
    "dpmpp-2m": (DPMSolverPP2M, 0.0, False),
    "dpmpp-2m-sde": (DPMSolverPP2M, 1.0, True),
    "dpmpp-3m": (DPMSolverPP3M, 0.0, False),
    "dpmpp-3m-sde": (DPMSolverPP3M, 1.0, True),
    "unipc": (UniPC, 0.0, True),  # deterministic: UniPC-2, bh2 (diffusers' UniPCMultistepScheduler default)
}


def sampler_name(sampler: Any) -> str:
    """The registry name of a sampler object (the name that takes its η: ``"dpmpp-2m"``, not
    ``"dpmpp-2m-sde"``; ``"unipc"``), or its class name for a sampler from outside the registry."""
    names = [(fixed, n) for n, (cls, _, fixed) in SAMPLERS.items() if cls is type(sampler)]
    return min(names)[1] if names else type(sampler).__name__


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
        free = next((n for n, (c, _, f) in SAMPLERS.items() if c is cls and not f), None)
        instead = f"; use {free!r} with eta={eta} instead" if free else " (it is deterministic)"
        raise ValueError(f"{argument} {name!r} fixes eta = {default_eta}{instead}")
    return cls(eta=float(eta))


def iterate(denoise: Callable[[torch.Tensor, Any], torch.Tensor], x: torch.Tensor, timesteps: Sequence[Any],
            schedule: Schedule | Any, sampler: Sampler,
            generator: Generator = None) -> Iterator[tuple[Any, torch.Tensor, torch.Tensor]]:
    """Run ``sampler`` over the descending grid ``timesteps`` of ``schedule`` (or of a 1-D ᾱ tensor),
    yielding ``(t, x̂0, x_next)`` per network call; the step after the last time goes to clean data,
    so the last ``x_next`` is the sample."""
    schedule = as_schedule(schedule)
    levels = [schedule.level(t) for t in timesteps] + [CLEAN]
    carry = None
    for i, t in enumerate(timesteps):
        denoised = denoise(x, t)
        x, carry = sampler.step(x, denoised, levels[i], levels[i + 1], carry, generator)
        yield t, denoised, x


def sample(denoise: Callable[[torch.Tensor, Any], torch.Tensor], x: torch.Tensor, timesteps: Sequence[Any],
           schedule: Schedule | Any, sampler: Sampler, generator: Generator = None) -> torch.Tensor:
    """The blocking sampler: drain :func:`iterate` and return the final sample."""
    for _, _, x in iterate(denoise, x, timesteps, schedule, sampler, generator):
        pass
    return x
