"""Adapter for pixel-space ``UNet2DModel`` pipelines: unconditional (DDPMPipeline) and
class-conditional (``num_class_embeds`` = classes + 1, the last index is the null class used for
classifier-free guidance — the embedded digit model follows this convention)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..samplers.noise import randn_like
from ..schedules import Level, Schedule, from_denoised, from_scheduler, to_denoised
from .adapter import (Conditioning, UnsupportedPipelineError, check_guidance, check_image_size, check_labels,
                      classifier_free_guidance)


class UNet2DAdapter:
    """``DDPMPipeline``-style folders: a pixel-space ``UNet2DModel`` and a DDPM-type scheduler."""

    family = "unet2d"
    pixel_space = True  # the network denoises pixels: restoration operators act on its samples
    per_row_guidance = True  # guidance_scale may be one scale per row (classifier_free_guidance)

    def __init__(self, unet, scheduler, metadata: dict[str, Any] | None = None) -> None:
        self.unet, self.scheduler = unet, scheduler
        self.metadata = dict(metadata or {})
        num_embeds = unet.config.num_class_embeds
        self.num_classes: int | None = None if num_embeds is None else int(num_embeds) - 1
        self.null_class = self.num_classes
        self.conditioning = Conditioning("class") if self.num_classes is not None else \
            Conditioning("none", guidance="none")
        self.class_names = self.metadata.get("class_names")
        self.default_guidance = float(self.metadata.get("default_guidance", 1.0 if self.num_classes is None else 2.0))
        self.schedule, self.prediction_type = from_scheduler(scheduler)
        size = unet.config.sample_size
        self.sample_size = (size, size) if isinstance(size, int) else tuple(size)
        self.channels = unet.config.in_channels
        # every down block but the last halves the resolution
        self.size_multiple = 2 ** (len(unet.config.down_block_types) - 1)
        # pixel models: diffusers' DDPM/DDIM `clip_sample` clips x̂0 to the data range at every step
        self.clip_sample = float(scheduler.config.get("clip_sample_range", 1.0)) \
            if scheduler.config.get("clip_sample", False) else None

    @classmethod
    def from_pipe(cls, pipe) -> "UNet2DAdapter":
        from diffusers import UNet2DModel

        unet = getattr(pipe, "unet", None)
        if not isinstance(unet, UNet2DModel):
            raise UnsupportedPipelineError
        metadata = {}
        folder = getattr(pipe.config, "_name_or_path", None)
        if folder and (Path(folder) / "nested_diffusion.json").is_file():
            metadata = json.loads((Path(folder) / "nested_diffusion.json").read_text())
        return cls(unet, pipe.scheduler, metadata)

    def schedule_for(self, height: int | None = None, width: int | None = None) -> Schedule:
        """The scheduler's noise schedule (the same at every image size)."""
        return self.schedule

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device=None, dtype=None) -> "UNet2DAdapter":
        if device is not None:
            self.unet.to(device)
        if dtype is not None:
            self.unet.to(dtype)
        return self

    # -- conditions ------------------------------------------------------------------------------
    def condition(self, num_images: int, *, class_labels=None, prompt=None, negative_prompt=None,
                  guidance_scale: float | None = None) -> dict[str, Any]:
        if prompt is not None or negative_prompt is not None:
            raise ValueError("this UNet2D model is not text-conditional: pass class_labels, not prompt")
        guidance = self.default_guidance if guidance_scale is None else check_guidance(guidance_scale)
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError("this UNet2D model is unconditional: class_labels must be None")
            return {"class_labels": None, "guidance_scale": 1.0}
        if class_labels is None:
            labels = torch.full((num_images,), self.null_class, dtype=torch.long)
            guidance = 1.0  # conditional and unconditional branches would be identical
        else:
            labels = check_labels(class_labels, num_images, self.num_classes)
        return {"class_labels": labels.to(self.device), "guidance_scale": guidance}

    def latent_shape(self, num_images: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """Shape of x_T for images of ``height`` × ``width`` pixels (multiples of the UNet's downsampling)."""
        h, w = check_image_size(height, width, *self.size_rule())
        return (num_images, self.channels, h, w)

    def size_rule(self) -> tuple[tuple[int, int], int]:
        """``(default (height, width), multiple)`` in pixels: the sample size and the UNet's downsampling."""
        return self.sample_size, self.size_multiple

    def initial_noise(self, num_images: int, generator: Any, height=None, width=None) -> torch.Tensor:
        """x_T drawn on the generator's device (one generator, or one per image as diffusers' ``randn_tensor``)."""
        shape = self.latent_shape(num_images, height, width)
        return randn_like(torch.empty(shape, dtype=self.dtype, device=self.device), generator)

    # -- editing: the state is the image itself ------------------------------------------------------
    def preprocess(self, image: Any, height: int, width: int) -> torch.Tensor:
        """An input image as ``[N, C, height, width]`` in [-1, 1] (grayscale for 1-channel models)."""
        from diffusers.image_processor import VaeImageProcessor

        processor = VaeImageProcessor(vae_scale_factor=1, do_convert_grayscale=self.channels == 1)
        return processor.preprocess(image, height=height, width=width).to(torch.float32)

    def preprocess_mask(self, mask_image: Any, height: int, width: int) -> torch.Tensor:
        """A mask (white = repaint), grayscale and binarized at 0.5: ``[N, 1, height, width]`` in {0, 1}."""
        from diffusers.image_processor import VaeImageProcessor

        processor = VaeImageProcessor(vae_scale_factor=1, do_normalize=False, do_binarize=True,
                                      do_convert_grayscale=True)
        return processor.preprocess(mask_image, height=height, width=width).to(torch.float32)

    def latent_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.to(self.device, self.dtype)

    def encode(self, pixels: torch.Tensor, generator: Any = None, sample: bool = True) -> torch.Tensor:
        """Pixel models sample pixels: the "latents" of an image in [-1, 1] are the image (nothing is drawn)."""
        return pixels.to(self.device, self.dtype)

    def kept_steps(self, num_inference_steps: int, strength: float) -> int:
        """Steps an edit with ``strength`` runs of an N-step grid: ``min(int(N·s), N)`` (diffusers' SD rule)."""
        return min(int(num_inference_steps * strength), num_inference_steps)

    # -- the network ------------------------------------------------------------------------------
    def _unet(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        out = self.unet(x.to(self.dtype), t, class_labels=class_labels).sample
        return out[:, : self.channels].to(x.dtype)  # drop a learned variance; the state keeps its dtype

    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None,
                 guidance_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Network output with classifier-free guidance in one (doubled) batch: one NFE."""
        uncond = None if class_labels is None else {"class_labels": torch.full_like(class_labels, self.null_class)}
        out = classifier_free_guidance(self._unet, x, t, guidance_scale, {"class_labels": class_labels}, uncond)
        if self.clip_sample is not None:  # clip x̂0, then express it again as the model's prediction
            shape, dtype = (-1, *[1] * (out.ndim - 1)), torch.promote_types(out.dtype, torch.float32)
            level = Level(*(v.to(out.device, dtype).view(shape) for v in self.schedule.levels(t)))
            denoised = to_denoised(out, x, level, self.prediction_type).clamp(-self.clip_sample, self.clip_sample)
            out = from_denoised(denoised, x, level, self.prediction_type).to(out.dtype)
        return out

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], float32 ``[N, C, H, W]``."""
        return ((x0.float() + 1) / 2).clamp(0, 1)
