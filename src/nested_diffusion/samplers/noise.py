"""Explicit, device-independent Gaussian noise."""

from __future__ import annotations

import torch


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device, then moved.

    Like diffusers' ``randn_tensor``: a CPU generator gives the same images on CPU and GPU.
    """
    if generator is None:
        return torch.randn(x.shape, device=x.device, dtype=x.dtype)
    if generator.device.type == x.device.type:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
