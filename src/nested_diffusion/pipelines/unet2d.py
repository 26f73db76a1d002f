"""Adapter for pixel-space ``UNet2DModel`` pipelines: unconditional (DDPMPipeline) and
class-conditional (``num_class_embeds`` = classes + 1, the last index is the null class used for
classifier-free guidance — the embedded digit model follows this convention)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..schedules import from_denoised, to_denoised
from .base import Adapter, UnsupportedPipelineError, check_labels


class UNet2DAdapter(Adapter):
    family = "unet2d"

    def __init__(self, unet, scheduler, metadata: dict[str, Any] | None = None) -> None:
        self.unet, self.scheduler = unet, scheduler
        self.metadata = dict(metadata or {})
        num_embeds = unet.config.num_class_embeds
        self.num_classes: int | None = None if num_embeds is None else int(num_embeds) - 1
        self.null_class = self.num_classes
        self.class_names = self.metadata.get("class_names")
        self.default_guidance = float(self.metadata.get("default_guidance", 1.0 if self.num_classes is None else 2.0))
        self.alphas_cumprod = scheduler.alphas_cumprod.detach().to(torch.float64)
        self.prediction_type = scheduler.config.prediction_type
        size = unet.config.sample_size
        self.sample_size = (size, size) if isinstance(size, int) else tuple(size)
        self.channels = unet.config.in_channels
        self.learned_variance = unet.config.out_channels == 2 * unet.config.in_channels
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
        guidance = self.default_guidance if guidance_scale is None else self.check_guidance(guidance_scale)
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError("this UNet2D model is unconditional: class_labels must be None")
            return {"class_labels": None, "guidance_scale": 1.0}
        if class_labels is None:
            labels = torch.full((num_images,), self.null_class, dtype=torch.long)
        else:
            labels = check_labels(class_labels, num_images, self.num_classes)
        return {"class_labels": labels.to(self.device), "guidance_scale": guidance}

    def initial_noise(self, num_images: int, generator: torch.Generator | None, height=None, width=None) -> torch.Tensor:
        if height is not None or width is not None:
            h, w = height or self.sample_size[0], width or self.sample_size[1]
        else:
            h, w = self.sample_size
        shape = (num_images, self.channels, h, w)
        gdev = generator.device if generator is not None else self.device
        return torch.randn(shape, generator=generator, device=gdev, dtype=self.dtype).to(self.device)

    # -- the network ------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None,
                 guidance_scale: float = 1.0) -> torch.Tensor:
        """Network output with classifier-free guidance in one (doubled) batch: one NFE."""
        if class_labels is None or guidance_scale == 1.0:
            out = self.unet(x, t, class_labels=class_labels).sample
        else:
            null = torch.full_like(class_labels, self.null_class)
            out = self.unet(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([class_labels, null])).sample
            cond, uncond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        if self.learned_variance:
            out = out[:, : self.channels]
        if self.clip_sample is not None:  # clip x̂0, then express it again as the model's prediction
            a = self.alphas_cumprod[t.cpu()].to(out.device, torch.float32).view(-1, *[1] * (out.ndim - 1))
            denoised = to_denoised(out, x, a, self.prediction_type).clamp(-self.clip_sample, self.clip_sample)
            out = from_denoised(denoised, x, a, self.prediction_type).to(out.dtype)
        return out

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], float32 ``[N, C, H, W]``."""
        return ((x0.float() + 1) / 2).clamp(0, 1)
