"""Adapters for Stable Diffusion 1.x/2.x (``StableDiffusionPipeline``) and SDXL
(``StableDiffusionXLPipeline``).

Prompts are encoded by the pipeline's own ``encode_prompt`` (so textual inversion, LoRA text
layers, SDXL's two encoders and ``force_zeros_for_empty_prompt`` behave as in diffusers); SDXL's
added time conditioning comes from the pipeline's ``_get_add_time_ids``. Classifier-free guidance
follows diffusers: applied when ``guidance_scale > 1`` (unless the UNet is guidance-distilled,
``time_cond_proj_dim``), in one doubled batch ``[negative, positive]`` = one NFE.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import UnsupportedPipelineError
from .latent import LatentAdapter, call_default, prompt_batch

__all__ = ["StableDiffusionAdapter", "StableDiffusionXLAdapter"]


class StableDiffusionAdapter(LatentAdapter):
    """``StableDiffusionPipeline`` (epsilon or v-prediction, from the scheduler config)."""

    family = "stable-diffusion"
    num_classes = None  # text-conditional

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe, pipe.unet)
        self.unet = pipe.unet
        self.default_guidance = float(call_default(pipe, "guidance_scale", 7.5))
        self.time_cond_proj_dim = self.unet.config.get("time_cond_proj_dim")

    @classmethod
    def from_pipe(cls, pipe: Any) -> "StableDiffusionAdapter":
        """Wrap a ``StableDiffusionPipeline`` (or a subclass); anything else is not this family."""
        from diffusers import StableDiffusionPipeline

        if not isinstance(pipe, StableDiffusionPipeline):
            raise UnsupportedPipelineError
        return cls(pipe)

    def _guidance(self, guidance_scale: float | None) -> tuple[float, bool]:
        g = self.default_guidance if guidance_scale is None else self.check_guidance(guidance_scale)
        return g, g > 1 and self.time_cond_proj_dim is None

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

    def condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                  negative_prompt: Any = None, guidance_scale: float | None = None) -> dict[str, Any]:
        """Encode the prompt(s) with the pipeline's ``encode_prompt``; ``prompt=None`` is the empty prompt."""
        guidance, cfg, prompts, negatives, per_prompt = self._text_condition(
            num_images, class_labels, prompt, negative_prompt, guidance_scale)
        positive, negative = self.pipe.encode_prompt(prompts, self.device, per_prompt, cfg, negatives)
        return {"encoder_hidden_states": torch.cat([negative, positive]) if cfg else positive,
                "guidance_scale": guidance, "timestep_cond": self._timestep_cond(guidance, num_images)}

    def _unet(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor, guidance_scale: float,
              timestep_cond: torch.Tensor | None, added_cond_kwargs: dict[str, torch.Tensor] | None) -> torch.Tensor:
        cfg = encoder_hidden_states.shape[0] == 2 * x.shape[0]
        if cfg:
            x, t = torch.cat([x, x]), torch.cat([t, t])
        out = self.unet(x, t, encoder_hidden_states=encoder_hidden_states, timestep_cond=timestep_cond,
                        added_cond_kwargs=added_cond_kwargs, return_dict=False)[0]
        if cfg:
            uncond, cond = out.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        return out

    def __call__(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 guidance_scale: float = 1.0, timestep_cond: torch.Tensor | None = None) -> torch.Tensor:
        """UNet output (ε or v) with classifier-free guidance in one doubled batch: one NFE."""
        return self._unet(x, t, encoder_hidden_states, guidance_scale, timestep_cond, None)


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """``StableDiffusionXLPipeline``: two text encoders, pooled ``text_embeds`` and ``time_ids``.

    ``time_ids`` use the image size of the latents being denoised as original and target size and
    a (0, 0) crop, the pipeline's defaults.
    """

    family = "stable-diffusion-xl"
    upcast_vae = True

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
        """Wrap a ``StableDiffusionXLPipeline`` (or a subclass)."""
        from diffusers import StableDiffusionXLPipeline

        if not isinstance(pipe, StableDiffusionXLPipeline):
            raise UnsupportedPipelineError
        return cls(pipe)

    def condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                  negative_prompt: Any = None, guidance_scale: float | None = None) -> dict[str, Any]:
        """Encode with both text encoders (the same prompt for each, as the pipeline does by default)."""
        guidance, cfg, prompts, negatives, per_prompt = self._text_condition(
            num_images, class_labels, prompt, negative_prompt, guidance_scale)
        positive, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompts, device=self.device, num_images_per_prompt=per_prompt, do_classifier_free_guidance=cfg,
            negative_prompt=negatives)
        if cfg:
            positive, pooled = torch.cat([negative, positive]), torch.cat([negative_pooled, pooled])
        return {"encoder_hidden_states": positive, "text_embeds": pooled.to(self.device), "guidance_scale": guidance,
                "timestep_cond": self._timestep_cond(guidance, num_images)}

    def _time_ids(self, latents: torch.Tensor, batch: int, dtype: torch.dtype, projection_dim: int) -> torch.Tensor:
        size = (latents.shape[-2] * self.vae_scale_factor, latents.shape[-1] * self.vae_scale_factor)
        key = (size, dtype, latents.device, projection_dim)
        if key not in self._time_ids_cache:
            ids = self.pipe._get_add_time_ids(size, (0, 0), size, dtype=dtype,
                                              text_encoder_projection_dim=projection_dim)
            self._time_ids_cache[key] = ids.to(latents.device)
        return self._time_ids_cache[key].repeat(batch, 1)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 text_embeds: torch.Tensor, guidance_scale: float = 1.0,
                 timestep_cond: torch.Tensor | None = None) -> torch.Tensor:
        """UNet output with SDXL's added conditioning and guidance in one doubled batch: one NFE."""
        encoder_2 = getattr(self.pipe, "text_encoder_2", None)
        projection_dim = int(encoder_2.config.projection_dim) if encoder_2 is not None else int(text_embeds.shape[-1])
        time_ids = self._time_ids(x, text_embeds.shape[0], encoder_hidden_states.dtype, projection_dim)
        return self._unet(x, t, encoder_hidden_states, guidance_scale, timestep_cond,
                          {"text_embeds": text_embeds, "time_ids": time_ids})
