"""The vanilla baseline: an ordinary sampler whose frames are the one-step x̂0 previews that
every diffusion UI shows (diffusers callbacks, AUTOMATIC1111, ComfyUI, InvokeAI)."""

from __future__ import annotations

from typing import Any

import torch

from .samplers import make_sampler
from .schedules import spaced_timesteps
from .session import Model, Session
from .nested import _check_steps

__all__ = ["VanillaSession", "vanilla_sample"]


class VanillaSession(Session):
    """A sampler with ``steps`` network calls on ``spaced_timesteps(T-1, steps)`` (diffusers'
    "trailing" grid); one frame per call whose image is that call's x̂0. The last frame's image
    is the final sample (the last step's output: x̂0 itself for every sampler here, a projected
    one for DDRM with σ_y = 0)."""

    batch_state = ("x", "carry")  # a multistep sampler's carry holds the previous x̂0, one row per image

    def __init__(self, model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *,
                 prediction_type: str = "epsilon", steps: int = 100, sampler: str = "ddim",
                 eta: float | None = 1.0, generator: torch.Generator | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(model, alphas_cumprod, noise, prediction_type=prediction_type,
                         generator=generator, model_kwargs=model_kwargs)
        self.num_steps = _check_steps(steps, "steps", self.num_train_timesteps)
        self.sampler = make_sampler(sampler, eta)
        self.timesteps = spaced_timesteps(self.num_train_timesteps - 1, steps)
        self.carry: Any = None

    def timestep_at(self, k: int) -> int:
        return self.timesteps[k]

    def cost_at(self, k: int) -> int:
        return 1

    def _advance(self, denoise) -> tuple[torch.Tensor, dict[str, Any]]:
        k, a = self.k, self.alphas_cumprod
        t = self.timesteps[k]
        denoised = denoise(self.x, t)
        alpha_bar_next = a[self.timesteps[k + 1]] if k + 1 < self.num_steps else 1.0
        x, carry = self.sampler.step(self.x, denoised, a[t], alpha_bar_next, self.carry, self.generator)
        return (x if k + 1 == self.num_steps else denoised), {"x": x, "carry": carry}


def vanilla_sample(model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *,
                   prediction_type: str = "epsilon", steps: int = 100, sampler: str = "ddim",
                   eta: float | None = 1.0, generator: torch.Generator | None = None,
                   model_kwargs: dict[str, Any] | None = None) -> VanillaSession:
    """Vanilla sampling with x̂0 previews; iterate the result for one :class:`Frame` per step.

    ``sampler``: "ddim" (with ``eta``; η = 1 is DDPM-ancestral-like), "ddpm", "dpmpp-2m" (η = 0:
    the ODE solver; η = 1: its SDE variant) or "dpmpp-2m-sde". ``eta=None`` takes the sampler's
    default.
    """
    return VanillaSession(model, alphas_cumprod, noise, prediction_type=prediction_type, steps=steps,
                          sampler=sampler, eta=eta, generator=generator, model_kwargs=model_kwargs)
