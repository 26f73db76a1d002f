"""Latent blending: a sampler wrapper that keeps the known region of an edit (inpainting with an ordinary
network, as diffusers' ``StableDiffusionInpaintPipeline`` does for 4-channel UNets)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..schedules import Level

__all__ = ["Blend"]


@dataclass(frozen=True)
class Blend:
    """After every step of ``sampler`` to level (α', σ'), the known region (``mask`` 0) is replaced by the
    known image re-noised to that level with one fixed noise, x' ← m x' + (1-m)(α' x0_known + σ' ε)
    (Lugmayr et al.'s RePaint without resampling; diffusers' latent inpainting): at the clean end it is the
    known image itself, so every finished sample keeps it exactly. ``mask`` is 1 where the sample is
    repainted, broadcastable against x; ``known`` and ``noise`` are shaped like x. Not exact posterior
    sampling — the known region never informs the rest except through the network (DDRM is exact for
    linear measurements).

    The multistep carry of ``sampler`` is its own (the x̂0 history is not blended). Rows of ``known``,
    ``mask`` and ``noise`` follow the images in ``fork(indices=)``."""

    sampler: Any
    known: torch.Tensor
    mask: torch.Tensor
    noise: torch.Tensor

    @property
    def eta(self) -> float:
        return self.sampler.eta

    def blend(self, x: torch.Tensor, level: Level) -> torch.Tensor:
        """x with its known region set to the known image at ``level``."""
        alpha, sigma = level
        known = self.known if sigma == 0 else alpha * self.known + sigma * self.noise
        return self.mask * x + (1 - self.mask) * known

    def step(self, x: torch.Tensor, denoised: torch.Tensor, level: Level, next_level: Level,
             carry: Any = None, generator: Any = None) -> tuple[torch.Tensor, Any]:
        x_next, carry = self.sampler.step(x, denoised, level, next_level, carry, generator)
        return self.blend(x_next, next_level), carry

    def select_rows(self, rows: list[int]) -> "Blend":
        index = torch.tensor(rows, dtype=torch.long, device=self.known.device)
        pick = lambda t: t[index] if t.ndim and t.shape[0] == len(self.known) else t  # noqa: E731
        inner = self.sampler.select_rows(rows) if callable(getattr(self.sampler, "select_rows", None)) else self.sampler
        return dataclasses.replace(self, sampler=inner, known=pick(self.known), mask=pick(self.mask),
                                   noise=pick(self.noise))

    def with_mask(self, mask: torch.Tensor) -> "Blend":
        """The same blend with another mask (a mask edited mid-run)."""
        return dataclasses.replace(self, mask=mask)
