"""Editing with a pipeline: image-to-image (SDEdit) and inpainting, in diffusers' words.

An edit starts from the input image's latents x0 noised to the strength's level, x = α x0 + σ ε (diffusers'
``add_noise`` / ``scale_noise`` with the same initial noise), and runs the last steps of the grid; inpainting
either blends the known region back after every step (:class:`~nested_diffusion.samplers.blend.Blend`, as
diffusers does for ordinary 4-channel UNets and 16-channel flow transformers) or, for a dedicated inpainting
network, passes the mask and the masked image's latents as its extra channels. The random draws happen in
diffusers' order — the input's latent sample, the initial noise, then the masked image's latent sample — so one
generator gives diffusers' latents. Everything is validated before any network call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..schedules import Level, Schedule, Time
from ..images import to_pixels

__all__ = ["Edit", "prepare_edit", "edit_timesteps", "check_strength", "DEFAULT_STRENGTH"]

#: diffusers' defaults: ``StableDiffusionImg2ImgPipeline`` 0.8, ``StableDiffusionInpaintPipeline`` 1.0
DEFAULT_STRENGTH = {"img2img": 0.8, "inpaint": 1.0}


def check_strength(strength: Any) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1 \
            or not math.isfinite(strength):
        raise ValueError(f"strength must lie in (0, 1] (the fraction of the noise schedule an edit re-runs), "
                         f"got {strength!r}")
    return float(strength)


@dataclass
class Edit:
    """A prepared edit: the input's model-space latents ``image`` (``None`` where diffusers never encodes it: a
    dedicated inpainting network at full strength) and the initial ``noise`` (shaped like the state), the ``mask`` at the state's resolution (1 = repaint; ``None`` for image-to-image), the extra
    ``network_inputs`` of a dedicated inpainting network, and the pixels shown to users (input in [-1, 1],
    mask in {0, 1})."""

    image: torch.Tensor | None
    noise: torch.Tensor
    strength: float
    mask: torch.Tensor | None = None
    network_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    pixels: torch.Tensor | None = None
    mask_pixels: torch.Tensor | None = None
    pure_noise: bool = False

    @property
    def blends(self) -> bool:
        """True when the known region is blended back (a mask and an ordinary network)."""
        return self.mask is not None and not self.network_inputs

    def select_rows(self, rows: list[int]) -> "Edit":
        """The edit of the images ``rows`` (``fork(indices=)``)."""
        pick = lambda t: None if t is None else t[torch.tensor(rows, device=t.device)]  # noqa: E731

        return Edit(image=pick(self.image), noise=pick(self.noise), strength=self.strength, mask=pick(self.mask),
                    network_inputs={k: pick(v) for k, v in self.network_inputs.items()}, pixels=pick(self.pixels),
                    mask_pixels=pick(self.mask_pixels), pure_noise=self.pure_noise)

    def start(self, noise: torch.Tensor, level: Level) -> torch.Tensor:
        """The state at the first level: the input noised to it, α x0 + σ ε — or the noise itself for an
        inpainting edit at full strength, as diffusers' inpainting pipelines start."""
        if self.pure_noise:
            return noise
        return self.noised(noise, level)

    def noised(self, noise: torch.Tensor, level: Level) -> torch.Tensor:
        """The input at ``level``: α x0 + σ ε (the forward process; diffusers' ``add_noise`` / ``scale_noise``)."""
        return level.alpha * self.image.to(noise.dtype) + level.sigma * noise


def edit_timesteps(adapter: Any, schedule: Schedule, steps: int, strength: float) -> tuple[list[Time], int]:
    """``(the last ``steps`` times of the vanilla grid whose strength-``strength`` edit runs at least that many
    steps, that grid's step count N)``. With the family's rule (:meth:`kept_steps`) for the smallest such N,
    an N-step vanilla edit runs exactly these times: nested(K, 1) with strength s is the vanilla edit of that N."""
    n = steps
    while adapter.kept_steps(n, strength) < steps:
        n += 1
    return schedule.timesteps(n)[-steps:], n


def _image_size(pixels: torch.Tensor, height: int | None, width: int | None) -> tuple[int, int]:
    return (pixels.shape[-2] if height is None else height), (pixels.shape[-1] if width is None else width)


def prepare_edit(adapter: Any, image: Any, mask_image: Any, strength: float | None, num_images: int,
                 generator: Any, height: int | None = None, width: int | None = None) -> tuple[Edit, int, int]:
    """Validate and prepare an edit for ``num_images`` images (one input shared by all, or one per image); returns
    the :class:`Edit` and the size ``(height, width)`` in pixels (the image's own, unless given)."""
    kind = "inpaint" if mask_image is not None else "img2img"
    strength = check_strength(DEFAULT_STRENGTH[kind] if strength is None else strength)
    extra = getattr(adapter, "extra_channels", 0)
    if extra and mask_image is None:
        raise ValueError(f"this {adapter.family} network is a dedicated inpainting model: give mask_image with image")
    raw = to_pixels(image, 3 if not getattr(adapter, "pixel_space", False) else adapter.channels)
    h, w = _image_size(raw, height, width)
    adapter.latent_shape(1, h, w)  # the size rule, named as height/width
    pixels = adapter.preprocess(raw, h, w)  # [0, 1] pixels as the pipeline's image processor prepares them
    if len(pixels) not in (1, num_images):
        raise ValueError(f"image holds {len(pixels)} images: give one, or one per image ({num_images})")
    pixels = pixels.expand(num_images, *pixels.shape[1:]) if len(pixels) == 1 else pixels
    mask = mask_pixels = None
    if mask_image is not None:
        raw_mask = to_pixels(mask_image, 1, name="mask_image")
        if tuple(raw_mask.shape[-2:]) != tuple(raw.shape[-2:]):
            raise ValueError(f"mask_image must have the image's size {raw.shape[-1]}×{raw.shape[-2]}, got "
                             f"{raw_mask.shape[-1]}×{raw_mask.shape[-2]}")
        mask_pixels = adapter.preprocess_mask(raw_mask, h, w)
        if len(mask_pixels) not in (1, num_images):
            raise ValueError(f"mask_image holds {len(mask_pixels)} masks: give one, or one per image ({num_images})")
        mask_pixels = mask_pixels.expand(num_images, *mask_pixels.shape[1:]) if len(mask_pixels) == 1 else mask_pixels
    # the random draws, in diffusers' order: the input's latents, the initial noise, the masked image's latents
    pure = mask_image is not None and strength == 1.0
    with torch.inference_mode():
        latents = adapter.encode(pixels, generator) if not (pure and extra) else None
        noise = adapter.initial_noise(num_images, generator, height=h, width=w)
        inputs: dict[str, torch.Tensor] = {}
        if mask_pixels is not None:
            mask = adapter.latent_mask(mask_pixels)
            if getattr(adapter, "encodes_masked_image", True):
                masked = adapter.encode(pixels * (mask_pixels < 0.5), generator)
                if extra:
                    inputs = {"mask": mask, "masked_image_latents": masked}
    edit = Edit(image=latents, noise=noise, strength=strength, mask=mask, network_inputs=inputs,
                pixels=pixels, mask_pixels=mask_pixels, pure_noise=pure)
    return edit, h, w
