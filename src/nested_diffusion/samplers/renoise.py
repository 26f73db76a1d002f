"""The forward process from a sample, as a sampler step: the renoising outer step of nested diffusion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..schedules import Level
from .noise import randn_like


@dataclass(frozen=True)
class Renoise:
    """x' = α' x̂0 + σ' z (Ho et al. 2020, eq. 4; diffusers' ``FlowMatchEulerDiscreteScheduler(
    stochastic_sampling=True)`` step). It forgets x: if x̂0 ~ p(x0) then x' ~ p(x') exactly, whatever the
    two levels are — Restart sampling's jump back up (Xu et al. 2023). Nothing is drawn when σ' = 0."""

    eta: float = 1.0  # all of the variance is fresh noise

    def step(self, x: torch.Tensor, denoised: torch.Tensor, level: Level, next_level: Level,
             carry: Any = None, generator: Any = None) -> tuple[torch.Tensor, Any]:
        alpha_next, sigma_next = next_level
        if sigma_next == 0:
            return denoised, None
        return alpha_next * denoised + sigma_next * randn_like(denoised, generator), None
