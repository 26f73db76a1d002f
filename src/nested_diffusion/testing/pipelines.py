"""An exact oracle inside a diffusers flow pipeline: its transformer replaced by the velocity of a Gaussian
mixture in the latent space the transformer sees, so the pipeline's own sampler and ours can be scored exactly."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..schedules import Level

__all__ = ["ExactVelocityTransformer"]


class ExactVelocityTransformer(torch.nn.Module):
    """The exact velocity E[ε - x0 | x_σ] of ``gmm`` on the 16×2×2 latents of a 16×16-pixel image (d = 64, the
    8×8-digit mixture), standing in for an SD3 or Flux transformer (``flux_pipe``: unpack Flux's packed tokens,
    its time input is σ; SD3's is σ·1000). Text inputs select nothing, so the halves of a guided call agree and
    guidance is exercised as plumbing (one doubled batch per NFE) while the sampled distribution stays ``gmm``."""

    def __init__(self, real: torch.nn.Module, gmm: Any, flux_pipe: Any = None) -> None:
        super().__init__()
        self.config, self.gmm, self.flux = real.config, gmm, flux_pipe
        self._anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # device and dtype for the pipeline

    dtype = property(lambda self: torch.float32)
    device = property(lambda self: self._anchor.device)

    def cache_context(self, name: str) -> contextlib.AbstractContextManager:  # FluxPipeline opens one per call
        return contextlib.nullcontext()

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor]:
        x = hidden_states
        if self.flux is not None:  # packed [N, 1, 64] at σ = timestep
            sigma = timestep.double()
            latents = self.flux._unpack_latents(x, 16, 16, self.flux.vae_scale_factor)
        else:  # [N, 16, 2, 2] at σ·1000
            sigma = timestep.double() / 1000
            latents = x
        flat = latents.reshape(len(x), -1).double()
        mean = self.gmm.denoise(flat, Level(1 - sigma, sigma))
        velocity = ((flat - mean) / sigma[:, None]).to(x.dtype).reshape(latents.shape)
        if self.flux is not None:
            velocity = self.flux._pack_latents(velocity, len(x), 16, 2, 2)
        return (velocity,)
