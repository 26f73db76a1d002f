"""Named restoration tasks: the operators behind ``nested-diffusion restore --task`` and
``evaluate --task``, built for one item shape ``(channels, height, width)``."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..defaults import DEFAULT_SIGMA_Y, RESTORATION_BOXES, RESTORATION_TASKS
from .operators import Colorization, Deblur, Dense, Denoising, Inpainting, LinearOperator, SuperResolution

__all__ = ["TASKS", "BOXES", "DEFAULT_SIGMA_Y", "make_operator", "box_mask", "random_mask", "gaussian_kernel"]

#: task name → what it does (for --help); the inpainting boxes; σ_y when none is given
TASKS, BOXES = RESTORATION_TASKS, RESTORATION_BOXES


def box_mask(shape: Sequence[int], box: str) -> torch.Tensor:
    """True = observed: every pixel except the ``box`` (a half of the image, or the centre square of
    half its height and width), in every channel."""
    if box not in BOXES:
        raise ValueError(f"box must be one of {BOXES}, got {box!r}")
    c, h, w = shape
    mask = torch.ones(c, h, w, dtype=torch.bool)
    hidden = {"top": (slice(0, h // 2), slice(None)), "bottom": (slice(h // 2, h), slice(None)),
              "left": (slice(None), slice(0, w // 2)), "right": (slice(None), slice(w // 2, w)),
              "center": (slice(h // 4, h // 4 + h // 2), slice(w // 4, w // 4 + w // 2))}[box]
    mask[(slice(None), *hidden)] = False
    return mask


def random_mask(shape: Sequence[int], fraction: float = 0.5, seed: int = 0) -> torch.Tensor:
    """True = observed: a random ``fraction`` of the pixel positions (all channels alike), from ``seed``."""
    c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    observed = torch.zeros(h * w, dtype=torch.bool)
    observed[torch.randperm(h * w, generator=g)[: round(fraction * h * w)]] = True
    return observed.reshape(1, h, w).expand(c, h, w).clone()


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalized 1-D Gaussian of std ``sigma`` pixels over 2⌈3σ⌉ + 1 taps."""
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"blur_sigma must be a positive number of pixels, got {sigma}")
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    return taps / taps.sum()


def make_operator(task: str, shape: Sequence[int], *, box: str = "bottom", blur_sigma: float = 1.0,
                  seed: int = 0, mask: torch.Tensor | None = None) -> LinearOperator:
    """The operator of ``task`` (see :data:`TASKS`) for items of ``shape`` = (channels, height, width);
    ``inpaint-mask`` takes ``mask`` (True = observed, one pixel grid ``(height, width)`` or the item's shape)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    shape = tuple(shape)
    if len(shape) != 3:
        raise ValueError(f"restoration tasks act on images (channels, height, width), got items of shape {shape}")
    if (mask is not None) != (task == "inpaint-mask"):
        raise ValueError("a mask goes with the task inpaint-mask (and that task needs one)")
    if task == "inpaint-mask":
        mask = torch.as_tensor(mask).bool()
        if tuple(mask.shape) == shape[1:]:
            mask = mask.expand(shape)
        if tuple(mask.shape) != shape:
            raise ValueError(f"mask must be {shape[1]}×{shape[2]} pixels (the model's image), got {tuple(mask.shape)}")
        return Inpainting(mask.clone())
    if task == "inpaint-box":
        return Inpainting(box_mask(shape, box))
    if task == "inpaint-random":
        return Inpainting(random_mask(shape, 0.5, seed))
    if task in ("sr2", "sr4"):
        factor = int(task[2:])
        if shape[1] % factor or shape[2] % factor:
            raise ValueError(f"task {task}: the image size {shape[1]}×{shape[2]} must be a multiple of {factor}")
        return SuperResolution(factor)
    if task == "deblur":
        return Deblur(gaussian_kernel(blur_sigma))
    if task == "denoise":
        return Denoising()
    if task == "colorize":
        if shape[0] != 3:
            raise ValueError(f"task colorize needs an RGB model, this one has {shape[0]} channel(s)")
        return Colorization()
    n = math.prod(shape)
    if n > 4096:
        raise ValueError(f"task dense forms a 20×{n} matrix: items of at most 4096 values, got {n}")
    return Dense(torch.randn(20, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / math.sqrt(n))
