"""Adapters for Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``) and SDXL
(``StableDiffusionXLPipeline``).

Prompts are encoded by the pipeline's own ``encode_prompt`` (so textual inversion, LoRA text
layers, SDXL's two encoders and ``force_zeros_for_empty_prompt`` behave as in diffusers); SDXL's
added time conditioning comes from the pipeline's ``_get_add_time_ids``. Classifier-free guidance
follows the project's one rule (:func:`~.adapter.classifier_free_guidance`): one doubled batch
``[negative, positive]`` = one NFE, except for guidance-distilled UNets (``time_cond_proj_dim``),
whose guidance is an embedding.
"""

from __future__ import annotations

from typing import Any

import torch

from .adapter import Conditioning, UnsupportedPipelineError, check_guidance, classifier_free_guidance, uses_guidance
from .latent import LatentAdapter, call_default, prompt_batch

__all__ = ["StableDiffusionAdapter", "StableDiffusionXLAdapter"]


def _family_pipe(pipe: Any, base: type, inpaint: type | None, siblings: tuple[str, ...]) -> Any:
    """The pipeline an adapter of this family wraps: ``pipe`` if it is a ``base`` (or a dedicated ``inpaint``
    pipeline with an inpainting UNet), the text-to-image pipeline of a sibling's components when its UNet is
    the ordinary one; otherwise not this family."""
    from .latent import _ordinary_network, _quiet_from_pipe

    if isinstance(pipe, base):
        return pipe
    if type(pipe).__name__ not in siblings:
        raise UnsupportedPipelineError
    if _ordinary_network(pipe, 1):
        return _quiet_from_pipe(base, pipe)
    if inpaint is not None and isinstance(pipe, inpaint):
        return pipe  # its encode_prompt, image and mask processors are the family's
    raise UnsupportedPipelineError


class StableDiffusionAdapter(LatentAdapter):
    """``StableDiffusionPipeline`` (epsilon or v-prediction, from the scheduler config)."""

    family = "stable-diffusion"
    num_classes = None  # text-conditional
    inpaint_networks = True  # 9-channel inpainting UNets: latents, the mask, the masked image's latents
    per_row_guidance = True  # guidance_scale may be one scale per row (classifier_free_guidance)
    pooled = False  # SDXL adds a pooled text embedding

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe, pipe.unet)
        self.unet = pipe.unet
        self.default_guidance = float(call_default(pipe, "guidance_scale", 7.5))
        self.time_cond_proj_dim = self.unet.config.get("time_cond_proj_dim")
        self.conditioning = Conditioning("text", pooled=self.pooled,
                                         guidance="cfg" if self.time_cond_proj_dim is None else "embedding")

    @classmethod
    def from_pipe(cls, pipe: Any) -> "StableDiffusionAdapter":
        """Wrap a ``StableDiffusionPipeline`` (or a subclass) and its img2img / inpaint siblings: an ordinary UNet's
        components make the text-to-image pipeline (``from_pipe``); a 9-channel inpainting pipeline is wrapped
        as it is (every call then needs a mask: an edit)."""
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

        return cls(_family_pipe(pipe, StableDiffusionPipeline, StableDiffusionInpaintPipeline,
                                ("StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline")))

    def _guidance(self, guidance_scale: float | None) -> tuple[float, bool]:
        g = self.default_guidance if guidance_scale is None else check_guidance(guidance_scale)
        return g, uses_guidance(g) and self.time_cond_proj_dim is None

    def _timestep_cond(self, guidance: float, batch: int) -> torch.Tensor | None:
        if self.time_cond_proj_dim is None:
            return None
        w = torch.tensor(guidance - 1).repeat(batch)
        return self.pipe.get_guidance_scale_embedding(w, embedding_dim=self.time_cond_proj_dim) \
            .to(device=self.device, dtype=self.dtype)

    def _text_condition(self, num_images: int, class_labels: Any, prompt: Any, negative_prompt: Any,
                        guidance_scale: float | None) -> tuple[float, bool, list[str], list[str] | None, int]:
        """Validated ``(guidance, use_cfg, prompts, negative prompts, images per prompt)``."""
        if class_labels is not None:
            raise ValueError(f"this {self.family} model is text-conditional: pass prompt, not class_labels")
        guidance, cfg = self._guidance(guidance_scale)
        return (guidance, cfg, *prompt_batch(prompt, negative_prompt, num_images))

    def check_condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                        negative_prompt: Any = None, guidance_scale: float | None = None) -> None:
        """What :meth:`condition` checks, without encoding the prompts."""
        self._text_condition(num_images, class_labels, prompt, negative_prompt, guidance_scale)

    def condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                  negative_prompt: Any = None, guidance_scale: float | None = None) -> dict[str, Any]:
        """Encode the prompt(s) with the pipeline's ``encode_prompt``; ``prompt=None`` is the empty prompt."""
        guidance, cfg, prompts, negatives, per_prompt = self._text_condition(
            num_images, class_labels, prompt, negative_prompt, guidance_scale)
        positive, negative = self.pipe.encode_prompt(prompts, self.device, per_prompt, cfg, negatives)
        return {"encoder_hidden_states": positive, "negative_encoder_hidden_states": negative if cfg else None,
                "guidance_scale": guidance, "timestep_cond": self._timestep_cond(guidance, num_images)}

    def _unet(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
              timestep_cond: torch.Tensor | None = None, added_cond_kwargs: dict | None = None,
              mask: torch.Tensor | None = None, masked_image_latents: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:  # a dedicated inpainting UNet: [latents, mask, masked-image latents]
            x = torch.cat([x, mask, masked_image_latents], dim=1)
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, timestep_cond=timestep_cond,
                         added_cond_kwargs=added_cond_kwargs, return_dict=False)[0]

    def _inpaint_inputs(self, mask: torch.Tensor | None, masked_image_latents: torch.Tensor | None) -> dict[str, Any]:
        """The extra inputs of a dedicated inpainting network (both halves of a guided batch get them)."""
        if not self.extra_channels:
            return {}
        if mask is None or masked_image_latents is None:
            raise ValueError(f"this {self.family} UNet is an inpainting network ({self.channels + self.extra_channels} "
                             "input channels): it needs an edit with image and mask_image")
        return {"mask": mask, "masked_image_latents": masked_image_latents}

    def __call__(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 negative_encoder_hidden_states: torch.Tensor | None = None, guidance_scale: float | torch.Tensor = 1.0,
                 timestep_cond: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                 masked_image_latents: torch.Tensor | None = None) -> torch.Tensor:
        """UNet output (ε or v) with classifier-free guidance in one doubled batch: one NFE."""
        extra = self._inpaint_inputs(mask, masked_image_latents)
        uncond = None if negative_encoder_hidden_states is None else \
            {"encoder_hidden_states": negative_encoder_hidden_states, **extra}
        return classifier_free_guidance(self._unet, x, t, guidance_scale,
                                        {"encoder_hidden_states": encoder_hidden_states, **extra}, uncond,
                                        timestep_cond=timestep_cond)


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """``StableDiffusionXLPipeline``: two text encoders, pooled ``text_embeds`` and ``time_ids``.

    ``time_ids`` use the image size of the latents being denoised as original and target size and
    a (0, 0) crop, the pipeline's defaults.
    """

    family = "stable-diffusion-xl"
    upcast_vae = True
    pooled = True

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        if self.unet.config.get("addition_embed_type") != "text_time":
            raise ValueError("this SDXL pipeline's UNet has no text_time added conditioning "
                             f"(addition_embed_type={self.unet.config.get('addition_embed_type')!r})")
        sample_size = getattr(pipe, "default_sample_size", None) or self.unet.config.sample_size
        self.latent_size = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        self._time_ids_cache: dict[Any, torch.Tensor] = {}

    @classmethod
    def from_pipe(cls, pipe: Any) -> "StableDiffusionXLAdapter":
        """Wrap a ``StableDiffusionXLPipeline`` (or a subclass) and its img2img / inpaint siblings with an
        ordinary UNet (their components make the text-to-image pipeline)."""
        from diffusers import StableDiffusionXLPipeline

        return cls(_family_pipe(pipe, StableDiffusionXLPipeline, None,
                                ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")))

    def condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                  negative_prompt: Any = None, guidance_scale: float | None = None) -> dict[str, Any]:
        """Encode with both text encoders (the same prompt for each, as the pipeline does by default)."""
        guidance, cfg, prompts, negatives, per_prompt = self._text_condition(
            num_images, class_labels, prompt, negative_prompt, guidance_scale)
        positive, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompts, device=self.device, num_images_per_prompt=per_prompt, do_classifier_free_guidance=cfg,
            negative_prompt=negatives)
        return {"encoder_hidden_states": positive, "text_embeds": pooled.to(self.device),
                "negative_encoder_hidden_states": negative if cfg else None,
                "negative_text_embeds": negative_pooled.to(self.device) if cfg else None,
                "guidance_scale": guidance, "timestep_cond": self._timestep_cond(guidance, num_images)}

    def _time_ids(self, latents: torch.Tensor, dtype: torch.dtype, text_embeds: torch.Tensor) -> torch.Tensor:
        """SDXL's added time ids for ``latents``: their own size as original and target size, no crop."""
        size = (latents.shape[-2] * self.vae_scale_factor, latents.shape[-1] * self.vae_scale_factor)
        encoder_2 = getattr(self.pipe, "text_encoder_2", None)
        projection_dim = int(encoder_2.config.projection_dim) if encoder_2 is not None else int(text_embeds.shape[-1])
        key = (size, dtype, latents.device, projection_dim)
        if key not in self._time_ids_cache:
            ids = self.pipe._get_add_time_ids(size, (0, 0), size, dtype=dtype,
                                              text_encoder_projection_dim=projection_dim)
            self._time_ids_cache[key] = ids.to(latents.device)
        return self._time_ids_cache[key].repeat(latents.shape[0], 1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 text_embeds: torch.Tensor, negative_encoder_hidden_states: torch.Tensor | None = None,
                 negative_text_embeds: torch.Tensor | None = None, guidance_scale: float | torch.Tensor = 1.0,
                 timestep_cond: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                 masked_image_latents: torch.Tensor | None = None) -> torch.Tensor:
        """UNet output with SDXL's added conditioning and guidance in one doubled batch: one NFE."""
        extra = self._inpaint_inputs(mask, masked_image_latents)
        cond = {"encoder_hidden_states": encoder_hidden_states, "text_embeds": text_embeds, **extra}
        uncond = None if negative_encoder_hidden_states is None else \
            {"encoder_hidden_states": negative_encoder_hidden_states, "text_embeds": negative_text_embeds, **extra}
        return classifier_free_guidance(self._sdxl_unet, x, t, guidance_scale, cond, uncond, timestep_cond=timestep_cond)

    def _sdxl_unet(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                   text_embeds: torch.Tensor, timestep_cond: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None, masked_image_latents: torch.Tensor | None = None) -> torch.Tensor:
        time_ids = self._time_ids(x, encoder_hidden_states.dtype, text_embeds)
        return self._unet(x, t, encoder_hidden_states, timestep_cond, {"text_embeds": text_embeds, "time_ids": time_ids},
                          mask, masked_image_latents)
