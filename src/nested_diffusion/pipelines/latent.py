"""Shared parts of the latent-space adapters (Stable Diffusion 1.x/2.x, SDXL, DiT).

Everything model-specific is read from the loaded pipeline: the training schedule ᾱ from its
scheduler, the prediction type from the scheduler config, the latent scale (and, for SDXL-style
VAEs, ``latents_mean``/``latents_std``) from the VAE config. Initial noise is drawn with diffusers'
own ``randn_tensor`` so that one generator gives the same latents as the diffusers pipeline.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from ..schedules import PREDICTION_TYPES
from .adapter import check_image_size

__all__ = ["LatentAdapter", "scheduler_schedule", "call_default", "prompt_batch"]


def scheduler_schedule(scheduler: Any) -> tuple[torch.Tensor, str]:
    """``(alphas_cumprod as float64, prediction_type)`` of a diffusers scheduler.

    Raises ``ValueError`` for schedulers without a VP (DDPM-type) training schedule, e.g. flow
    matching, or with a prediction type the core does not know.
    """
    ac = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(ac, torch.Tensor):
        raise ValueError(f"scheduler {type(scheduler).__name__} has no alphas_cumprod: nested diffusion needs a "
                         "VP (DDPM-type) training schedule, e.g. DDIMScheduler or DPMSolverMultistepScheduler")
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"scheduler prediction_type {prediction_type!r} is not supported; "
                         f"expected one of {PREDICTION_TYPES}")
    return ac.detach().to("cpu", torch.float64), prediction_type


def call_default(pipe: Any, name: str, fallback: Any) -> Any:
    """The default of argument ``name`` of the pipeline's own ``__call__`` (e.g. its guidance scale)."""
    try:
        parameter = inspect.signature(type(pipe).__call__).parameters.get(name)
    except (TypeError, ValueError):
        return fallback
    if parameter is None or parameter.default is inspect.Parameter.empty or parameter.default is None:
        return fallback
    return parameter.default


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


class LatentAdapter:
    """Base of adapters whose network works on VAE latents.

    Subclasses set ``self.network`` (the denoiser module) and may override :meth:`decode`.
    """

    #: pixel sizes must be multiples of ``vae_scale_factor * size_multiple``
    size_multiple = 1
    pixel_space = False  # samples are VAE latents

    def __init__(self, pipe: Any, network: torch.nn.Module) -> None:
        self.pipe, self.network = pipe, network
        self.vae = getattr(pipe, "vae", None)
        if self.vae is None:
            raise ValueError(f"{type(pipe).__name__} has no VAE: a latent pipeline needs pipe.vae")
        self.alphas_cumprod, self.prediction_type = scheduler_schedule(pipe.scheduler)
        vae_config = self.vae.config
        self.vae_scale_factor = 2 ** (len(vae_config.block_out_channels) - 1)
        self.scaling_factor = float(vae_config.scaling_factor)
        self.channels = int(network.config.in_channels)
        latent_channels = vae_config.get("latent_channels", self.channels)
        if latent_channels != self.channels:
            raise ValueError(f"{type(network).__name__} takes {self.channels} input channels but the VAE has "
                             f"{latent_channels} latent channels: not a text-to-image / class-to-image model")
        self.latent_size = _size(network.config.sample_size)

    # -- device and dtype ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the pipeline runs its models (diffusers' ``_execution_device``; offload-aware)."""
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LatentAdapter":
        """Move (and/or cast) the whole pipeline."""
        if device is not None:
            self.pipe.to(device)
        if dtype is not None:
            self.pipe.to(dtype)
        return self

    # -- noise --------------------------------------------------------------------------------------
    @property
    def default_size(self) -> tuple[int, int]:
        """Default image size in pixels ``(height, width)``."""
        return self.latent_size[0] * self.vae_scale_factor, self.latent_size[1] * self.vae_scale_factor

    def size_rule(self) -> tuple[tuple[int, int], int]:
        """``(default (height, width), multiple)`` in pixels: the VAE's factor times the network's own."""
        return self.default_size, self.vae_scale_factor * self.size_multiple

    def latent_shape(self, num_images: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """Shape of the initial latents for images of ``height`` × ``width`` pixels."""
        h, w = check_image_size(height, width, *self.size_rule())
        return (num_images, self.channels, h // self.vae_scale_factor, w // self.vae_scale_factor)

    def initial_noise(self, num_images: int, generator: torch.Generator | None, height: int | None = None,
                      width: int | None = None) -> torch.Tensor:
        """x_T exactly as the diffusers pipeline draws it (``randn_tensor`` on the execution device)."""
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(self.latent_shape(num_images, height, width), generator=generator, device=self.device,
                            dtype=self.dtype)

    # -- decoding ------------------------------------------------------------------------------------
    upcast_vae = False  # SDXL: decode in float32 when the fp16 VAE asks for it (config.force_upcast)

    def unscale(self, x0: torch.Tensor) -> torch.Tensor:
        """Model-space latents → VAE latents (``scaling_factor``; ``latents_mean``/``latents_std`` if set)."""
        config = self.vae.config
        mean, std = config.get("latents_mean"), config.get("latents_std")
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            mean = torch.tensor(mean).view(shape).to(x0.device, x0.dtype)
            std = torch.tensor(std).view(shape).to(x0.device, x0.dtype)
            return x0 * std / self.scaling_factor + mean
        return x0 / self.scaling_factor

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], float32 ``[N, 3, H, W]``, decoded by the pipeline's VAE."""
        vae = self.vae
        restore = None
        if self.upcast_vae and vae.dtype == torch.float16 and vae.config.get("force_upcast", False):
            restore = vae.dtype
            vae.to(torch.float32)
        try:
            latents = self.unscale(x0).to(vae.dtype)
            image = vae.decode(latents, return_dict=False)[0]
        finally:
            if restore is not None:
                vae.to(restore)
        return (image.float() / 2 + 0.5).clamp(0, 1)


def prompt_batch(prompt: Any, negative_prompt: Any, num_images: int) -> tuple[list[str], list[str] | None, int]:
    """``(prompts, negative prompts or None, images per prompt)`` for diffusers' ``encode_prompt``.

    ``prompt`` is a string, a list of strings or ``None`` (the empty prompt: unconditional);
    ``num_images`` must be a multiple of the number of prompts (diffusers' ``num_images_per_prompt``
    ordering: every prompt's images are adjacent).
    """
    if prompt is None:
        prompt = ""
    prompts: Sequence[Any] = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    if num_images % len(prompts):
        raise ValueError(f"num_images ({num_images}) must be a multiple of the number of prompts ({len(prompts)})")
    negatives = None
    if negative_prompt is not None:
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
        if not isinstance(negatives, (list, tuple)) or not all(isinstance(p, str) for p in negatives) \
                or len(negatives) != len(prompts):
            raise ValueError(f"negative_prompt must be a string or a list of {len(prompts)} strings "
                             f"(one per prompt), got {negative_prompt!r}")
        negatives = list(negatives)
    return list(prompts), negatives, num_images // len(prompts)
