"""Shared parts of the latent-space adapters (Stable Diffusion 1.x/2.x, SDXL, DiT).

Everything model-specific is read from the loaded pipeline: the noise schedule and the prediction
type from its scheduler (:func:`~nested_diffusion.schedules.from_scheduler`), the latent scale (and, for SDXL-style
VAEs, ``latents_mean``/``latents_std``) from the VAE config. Initial noise is drawn with diffusers'
own ``randn_tensor`` so that one generator gives the same latents as the diffusers pipeline.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch

from ..schedules import Schedule, from_scheduler
from .adapter import check_image_size

__all__ = ["LatentAdapter", "call_default", "prompt_batch"]


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
    #: whether this family has dedicated inpainting networks (mask and masked-image latents as extra channels)
    inpaint_networks = False

    def __init__(self, pipe: Any, network: torch.nn.Module, *, channels: int | None = None,
                 sample_size: Any = None) -> None:
        self.pipe, self.network = pipe, network
        self.vae = getattr(pipe, "vae", None)
        if self.vae is None:
            raise ValueError(f"{type(pipe).__name__} has no VAE: a latent pipeline needs pipe.vae")
        self.schedule, self.prediction_type = from_scheduler(pipe.scheduler)
        vae_config = self.vae.config
        self.vae_scale_factor = 2 ** (len(vae_config.block_out_channels) - 1)
        self.scaling_factor = float(vae_config.scaling_factor)
        # the latent channels of the state (a family that packs latents, as Flux does, says how many)
        self.channels = int(network.config.in_channels) if channels is None else int(channels)
        latent_channels = vae_config.get("latent_channels", self.channels)
        #: input channels besides the latents: a dedicated inpainting network (SD/SDXL 9, SD3 33 inputs) takes the
        #: downsampled mask and the masked image's latents too
        self.extra_channels = 0
        if self.inpaint_networks and self.channels == 2 * latent_channels + 1:
            self.channels, self.extra_channels = latent_channels, latent_channels + 1
        if latent_channels != self.channels:
            raise ValueError(f"{type(network).__name__} takes {self.channels} latent channels but the VAE has "
                             f"{latent_channels}: not a text-to-image / class-to-image model")
        self.latent_size = _size(network.config.sample_size if sample_size is None else sample_size)

    def schedule_for(self, height: int | None = None, width: int | None = None) -> Schedule:
        """The noise schedule for images of ``height`` × ``width`` pixels: the scheduler's (a family whose
        shift depends on the image size overrides this)."""
        return self.schedule

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

    # -- editing: the input image, its latents and a mask ---------------------------------------------
    def preprocess(self, image: Any, height: int, width: int) -> torch.Tensor:
        """An input image (PIL, array or tensor in [0, 1]) as the pipeline's ``image_processor`` prepares it:
        float32 ``[N, 3, height, width]`` in [-1, 1]."""
        from diffusers.image_processor import VaeImageProcessor

        processor = getattr(self.pipe, "image_processor", None) or VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        return processor.preprocess(image, height=height, width=width).to(torch.float32)

    def preprocess_mask(self, mask_image: Any, height: int, width: int) -> torch.Tensor:
        """A mask (white = repaint) as diffusers' inpainting pipelines prepare it: grayscale, binarized at 0.5,
        ``[N, 1, height, width]`` in {0, 1}."""
        from diffusers.image_processor import VaeImageProcessor

        processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, do_normalize=False, do_binarize=True,
                                      do_convert_grayscale=True)
        return processor.preprocess(mask_image, height=height, width=width).to(torch.float32)

    def latent_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The pixel mask at the latents' resolution (nearest, as ``prepare_mask_latents`` does)."""
        h, w = mask.shape[-2] // self.vae_scale_factor, mask.shape[-1] // self.vae_scale_factor
        return torch.nn.functional.interpolate(mask, size=(h, w)).to(self.device, self.dtype)

    def encode(self, pixels: torch.Tensor, generator: Any = None, sample: bool = True) -> torch.Tensor:
        """Model-space latents of ``pixels`` in [-1, 1]: a sample of the VAE's latent distribution drawn from
        ``generator`` (one per image for a list: diffusers' ``retrieve_latents``), or its mode
        (``sample=False``), then scaled as the pipeline scales (the inverse of :meth:`unscale`)."""
        vae = self.vae
        restore = None
        if self.upcast_vae and vae.dtype == torch.float16 and vae.config.get("force_upcast", False):
            restore = vae.dtype
            vae.to(torch.float32)
        try:
            pixels = pixels.to(self.device, vae.dtype)

            def latents(rows: torch.Tensor, g: Any) -> torch.Tensor:
                dist = vae.encode(rows).latent_dist
                return dist.sample(g) if sample else dist.mode()

            if isinstance(generator, (list, tuple)):
                z = torch.cat([latents(pixels[i:i + 1], generator[i]) for i in range(len(pixels))])
            else:
                z = latents(pixels, generator)
        finally:
            if restore is not None:
                vae.to(restore)
        return self.scale(z).to(self.dtype)

    def scale(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents → model-space latents (the inverse of :meth:`unscale`)."""
        config = self.vae.config
        shift = config.get("shift_factor")
        if shift is not None:
            return (z - shift) * self.scaling_factor
        mean, std = config.get("latents_mean"), config.get("latents_std")
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            mean = torch.tensor(mean).view(shape).to(z.device, z.dtype)
            std = torch.tensor(std).view(shape).to(z.device, z.dtype)
            return (z - mean) * self.scaling_factor / std
        return z * self.scaling_factor

    def kept_steps(self, num_inference_steps: int, strength: float) -> int:
        """How many of an N-step grid's last steps an edit with ``strength`` runs: ``min(int(N·s), N)``, as
        the SD/SDXL img2img and inpaint pipelines' ``get_timesteps`` compute it."""
        return min(int(num_inference_steps * strength), num_inference_steps)

    # -- decoding ------------------------------------------------------------------------------------
    upcast_vae = False  # SDXL: decode in float32 when the fp16 VAE asks for it (config.force_upcast)

    def unscale(self, x0: torch.Tensor) -> torch.Tensor:
        """Model-space latents → VAE latents: x0/scaling_factor + shift_factor (SD3, Flux), or with
        ``latents_mean``/``latents_std`` (SDXL-style VAEs) where the config sets them."""
        config = self.vae.config
        shift = config.get("shift_factor")
        if shift is not None:
            return x0 / self.scaling_factor + shift
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


def _ordinary_network(pipe: Any, packing: int) -> bool:
    """True when the pipeline's network takes the VAE's latents only (``packing`` latent pixels per token),
    not an inpainting network with the mask and masked image as extra input channels."""
    network = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    vae = getattr(pipe, "vae", None)
    if network is None or vae is None:
        return False
    return int(network.config.in_channels) == int(vae.config.get("latent_channels", 4)) * packing


def _quiet_from_pipe(cls: type, pipe: Any) -> Any:
    """``cls.from_pipe(pipe)`` (shared components, no copy) without diffusers' dtype chatter."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        return cls.from_pipe(pipe)
    finally:
        logging.set_verbosity(level)


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
