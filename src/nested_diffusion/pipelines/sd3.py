"""Adapter for Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``): a rectified-flow transformer on
16-channel VAE latents.

Everything is read from the pipeline: the flow schedule from its ``FlowMatchEulerDiscreteScheduler`` (shift 3
for SD3-medium; a size-dependent μ where the config asks for dynamic shifting, computed as the pipeline does
from the latent patches), prompts encoded by the pipeline's own ``encode_prompt`` (two CLIP encoders and T5:
token embeddings and pooled projections), the network called at diffusers' raw model time σ·1000, decoding
with ``scaling_factor`` and ``shift_factor``. Classifier-free guidance follows the project's one rule
(:func:`~.adapter.classifier_free_guidance`): one doubled batch ``[negative, positive]`` = one NFE. SD3.5's
skip-layer guidance is not applied (its extra transformer call per step would break the one-call NFE).
"""

from __future__ import annotations

from typing import Any

import torch

from ..schedules import Schedule
from .adapter import Conditioning, UnsupportedPipelineError, check_guidance, classifier_free_guidance, uses_guidance
from .latent import LatentAdapter, _ordinary_network, _quiet_from_pipe, call_default, prompt_batch

__all__ = ["StableDiffusion3Adapter", "SIBLINGS"]

#: pipelines whose components make a StableDiffusion3Pipeline for free (the same transformer, VAE and encoders)
SIBLINGS = ("StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline")


class StableDiffusion3Adapter(LatentAdapter):
    """``StableDiffusion3Pipeline`` (and its subclasses): velocity prediction on a flow schedule."""

    family = "stable-diffusion-3"
    num_classes = None  # text-conditional
    conditioning = Conditioning("text", pooled=True, guidance="cfg")
    per_row_guidance = True  # guidance_scale may be one scale per row (classifier_free_guidance)
    inpaint_networks = True  # 33-channel inpainting transformers: latents, the mask, the masked image's latents

    def __init__(self, pipe: Any) -> None:
        transformer = pipe.transformer
        sample_size = getattr(pipe, "default_sample_size", None) or transformer.config.sample_size
        super().__init__(pipe, transformer, sample_size=sample_size)
        if self.prediction_type != "flow":
            raise ValueError(f"this SD3 pipeline's scheduler ({type(pipe.scheduler).__name__}) is not a flow-matching "
                             "scheduler: SD3 transformers predict the flow velocity")
        self.transformer = transformer
        self.patch_size = int(transformer.config.get("patch_size") or 2)
        self.size_multiple = self.patch_size
        self.default_guidance = float(call_default(pipe, "guidance_scale", 7.0))
        self.max_sequence_length = int(call_default(pipe, "max_sequence_length", 256))

    @classmethod
    def from_pipe(cls, pipe: Any) -> "StableDiffusion3Adapter":
        """Wrap a ``StableDiffusion3Pipeline`` (or a subclass); its img2img / inpaint siblings with an ordinary
        16-channel transformer are wrapped through ``StableDiffusion3Pipeline.from_pipe`` (shared components)."""
        from diffusers import StableDiffusion3InpaintPipeline, StableDiffusion3Pipeline

        if not isinstance(pipe, StableDiffusion3Pipeline):
            if type(pipe).__name__ not in SIBLINGS:
                raise UnsupportedPipelineError
            if _ordinary_network(pipe, 1):
                pipe = _quiet_from_pipe(StableDiffusion3Pipeline, pipe)
            elif not isinstance(pipe, StableDiffusion3InpaintPipeline):  # a dedicated inpainting transformer stays
                raise UnsupportedPipelineError
        return cls(pipe)

    def schedule_for(self, height: int | None = None, width: int | None = None) -> Schedule:
        """The scheduler's flow schedule; with dynamic shifting, μ for this size's number of latent patches
        (``(h/8/patch)·(w/8/patch)``, as ``StableDiffusion3Pipeline.__call__`` computes it)."""
        if not getattr(self.schedule, "use_dynamic_shifting", False):
            return self.schedule
        _, _, h, w = self.latent_shape(1, height, width)
        return self.schedule.at_image_seq_len((h // self.patch_size) * (w // self.patch_size))

    def kept_steps(self, num_inference_steps: int, strength: float) -> int:
        """Steps an edit with ``strength`` runs of an N-step grid: N - int(max(N - min(N·s, N), 0)), as the
        SD3 img2img / inpaint pipelines' ``get_timesteps`` compute it (a fraction rounds up, unlike SD's)."""
        return num_inference_steps - int(max(num_inference_steps - min(num_inference_steps * strength,
                                                                        num_inference_steps), 0))

    # -- conditions --------------------------------------------------------------------------------------
    def _text_condition(self, num_images: int, class_labels: Any, prompt: Any, negative_prompt: Any,
                        guidance_scale: float | None) -> tuple[float, bool, list[str], list[str] | None, int]:
        if class_labels is not None:
            raise ValueError(f"this {self.family} model is text-conditional: pass prompt, not class_labels")
        guidance = self.default_guidance if guidance_scale is None else check_guidance(guidance_scale)
        return (guidance, uses_guidance(guidance), *prompt_batch(prompt, negative_prompt, num_images))

    def check_condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                        negative_prompt: Any = None, guidance_scale: float | None = None) -> None:
        """What :meth:`condition` checks, without running the text encoders."""
        self._text_condition(num_images, class_labels, prompt, negative_prompt, guidance_scale)

    def condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                  negative_prompt: Any = None, guidance_scale: float | None = None) -> dict[str, Any]:
        """Token embeddings and pooled projections of the prompt(s) (and, with guidance, of the negative
        prompt(s)), from the pipeline's ``encode_prompt``; ``prompt=None`` is the empty prompt."""
        guidance, cfg, prompts, negatives, per_prompt = self._text_condition(
            num_images, class_labels, prompt, negative_prompt, guidance_scale)
        positive, negative, pooled, negative_pooled = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=per_prompt,
            do_classifier_free_guidance=cfg, negative_prompt=negatives, max_sequence_length=self.max_sequence_length)
        return {"encoder_hidden_states": positive, "pooled_projections": pooled,
                "negative_encoder_hidden_states": negative if cfg else None,
                "negative_pooled_projections": negative_pooled if cfg else None, "guidance_scale": guidance}

    # -- the network -------------------------------------------------------------------------------------
    def _transformer(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                     pooled_projections: torch.Tensor, mask: torch.Tensor | None = None,
                     masked_image_latents: torch.Tensor | None = None) -> torch.Tensor:
        inputs = x if mask is None else torch.cat([x, mask, masked_image_latents], dim=1)  # a 33-channel inpainter
        out = self.transformer(hidden_states=inputs.to(self.dtype), timestep=t,
                               encoder_hidden_states=encoder_hidden_states, pooled_projections=pooled_projections,
                               return_dict=False)[0]
        return out.to(x.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 pooled_projections: torch.Tensor, negative_encoder_hidden_states: torch.Tensor | None = None,
                 negative_pooled_projections: torch.Tensor | None = None,
                 guidance_scale: float | torch.Tensor = 1.0, mask: torch.Tensor | None = None,
                 masked_image_latents: torch.Tensor | None = None) -> torch.Tensor:
        """The velocity at model time ``t`` = σ·1000, guided in one doubled batch: one NFE."""
        extra = {}
        if self.extra_channels:
            if mask is None:
                raise ValueError("this SD3 transformer is an inpainting network (33 input channels): it needs an edit "
                                 "with image and mask_image")
            extra = {"mask": mask, "masked_image_latents": masked_image_latents}
        cond = {"encoder_hidden_states": encoder_hidden_states, "pooled_projections": pooled_projections, **extra}
        uncond = None if negative_encoder_hidden_states is None else {
            "encoder_hidden_states": negative_encoder_hidden_states, "pooled_projections": negative_pooled_projections,
            **extra}
        return classifier_free_guidance(self._transformer, x, t, guidance_scale, cond, uncond)
