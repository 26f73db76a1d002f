"""The vanilla baseline: an ordinary sampler whose frames are the one-step x̂0 previews that
every diffusion UI shows (diffusers callbacks, AUTOMATIC1111, ComfyUI, InvokeAI)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .samplers import Sampler, make_sampler
from .samplers.noise import Generator
from .schedules import CLEAN, Level, Schedule, Time
from .session import Model, Session, check_steps

__all__ = ["VanillaSession", "vanilla_sample"]


class VanillaSession(Session):
    """A sampler with ``steps`` network calls on the schedule's vanilla grid (diffusers' "trailing" grid
    on a discrete VP schedule, ``FlowMatchEulerDiscreteScheduler.set_timesteps(steps)``'s on a flow
    schedule) or on ``timesteps``; one frame per call whose image is that call's x̂0. The last frame's
    image is the final sample (the last step's output: x̂0 itself for every sampler here, a projected
    one for DDRM with σ_y = 0). ``sampler`` is a name (with ``eta``) or a sampler object; ``start`` maps
    the noise to the state at the first level (default: the noise itself)."""

    def __init__(self, model: Model, schedule: Schedule | Any, noise: torch.Tensor, *,
                 prediction_type: str | None = None, steps: int = 100, sampler: str | Sampler = "ddim",
                 eta: float | None = 1.0, timesteps: Sequence[Time] | None = None,
                 start: Callable[[torch.Tensor, Level], torch.Tensor] | None = None,
                 generator: Generator = None, model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(model, schedule, noise, prediction_type=prediction_type,
                         generator=generator, model_kwargs=model_kwargs)
        if timesteps is not None:
            timesteps = self.schedule.check_times(timesteps, "timesteps")
            if steps != len(timesteps):
                raise ValueError(f"steps ({steps}) must equal len(timesteps) ({len(timesteps)})")
        self.num_steps = check_steps(steps, "steps", self.schedule)
        self.samplers = {"step": make_sampler(sampler, eta) if isinstance(sampler, str) else sampler}
        self.timesteps = timesteps if timesteps is not None else self.schedule.timesteps(steps)
        self.state["carry"] = None  # a multistep sampler's carry holds the previous x̂0, one row per image
        if start is not None:
            self.state["x"] = start(self.x, self.schedule.level(self.timesteps[0]))

    @property
    def sampler(self) -> Sampler:
        return self.samplers["step"]

    @property
    def carry(self) -> Any:
        """The multistep sampler's carry (the previous x̂0 and step size), ``None`` before the first step."""
        return self.state["carry"]

    def timestep_at(self, k: int) -> Time:
        return self.timesteps[k]

    def cost_at(self, k: int) -> int:
        return 1

    def _advance(self, denoise) -> tuple[torch.Tensor, dict[str, Any]]:
        k, schedule = self.k, self.schedule
        t = self.timesteps[k]
        denoised = denoise(self.x, t)
        next_level = schedule.level(self.timesteps[k + 1]) if k + 1 < self.num_steps else CLEAN
        x, carry = self.sampler.step(self.x, denoised, schedule.level(t), next_level, self.state["carry"],
                                     self.generator)
        return (x if k + 1 == self.num_steps else denoised), {"x": x, "carry": carry}


def vanilla_sample(model: Model, schedule: Schedule | Any, noise: torch.Tensor, *,
                   prediction_type: str | None = None, steps: int = 100, sampler: str = "ddim",
                   eta: float | None = 1.0, generator: Generator = None,
                   model_kwargs: dict[str, Any] | None = None) -> VanillaSession:
    """Vanilla sampling with x̂0 previews; iterate the result for one :class:`Frame` per step.

    ``sampler``: "ddim" (with ``eta``; η = 1 is DDPM-ancestral-like; η = 0 on a flow schedule is Euler
    on the velocity, equal to diffusers' ``FlowMatchEulerDiscreteScheduler`` loop), "ddpm", "dpmpp-2m"
    (η = 0: the ODE solver; η = 1: its SDE variant), "dpmpp-2m-sde", "dpmpp-3m", "dpmpp-3m-sde", "unipc"
    (UniPC-2 bh2, deterministic: diffusers' ``UniPCMultistepScheduler`` default, its corrector free of NFEs).
    ``eta=None`` takes the sampler's default. ``schedule`` as for :func:`~nested_diffusion.nested_sample`.
    """
    return VanillaSession(model, schedule, noise, prediction_type=prediction_type, steps=steps,
                          sampler=sampler, eta=eta, generator=generator, model_kwargs=model_kwargs)
