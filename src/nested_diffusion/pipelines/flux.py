"""Adapter for Flux.1 (``FluxPipeline``): a rectified-flow transformer on 2×2-packed 16-channel latents.

The session's state is the *unpacked* latent image ``[N, 16, h, w]`` (so frames, masks and forks are images);
the network call packs it with the pipeline's own ``_pack_latents``, adds ``img_ids``/``txt_ids`` and unpacks the
velocity. Read from the pipeline, as ``FluxPipeline.__call__`` uses them:

* the σ grid ``linspace(1, 1/N, N)`` shifted with the scheduler's config ("trailing" spacing), with the dynamic
  μ of :func:`~nested_diffusion.schedules.calculate_shift` for the image's number of packed tokens
  (:meth:`FluxAdapter.schedule_for`);
* the transformer's time input σ (the pipeline divides its model time by 1000);
* Flux.1-dev (``guidance_embeds``): the guidance scale is an *input* (an embedding, no doubled batch);
  Flux.1-schnell: no guidance at all. Optional true classifier-free guidance with a negative prompt
  (``true_cfg_scale`` > 1, as diffusers') runs as one doubled batch ``[negative, positive]`` = one NFE — it doubles
  each call's work, where diffusers makes two calls;
* decoding with ``scaling_factor`` and ``shift_factor``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..schedules import Schedule
from .adapter import Conditioning, UnsupportedPipelineError, check_guidance, classifier_free_guidance, uses_guidance
from .latent import LatentAdapter, _ordinary_network, _quiet_from_pipe, call_default, prompt_batch

__all__ = ["FluxAdapter", "SIBLINGS"]

#: pipelines whose components make a FluxPipeline for free (the same transformer, VAE and encoders)
SIBLINGS = ("FluxImg2ImgPipeline", "FluxInpaintPipeline")


class FluxAdapter(LatentAdapter):
    """``FluxPipeline`` (dev: guidance-distilled; schnell: timestep-distilled)."""

    family = "flux"
    num_classes = None  # text-conditional
    #: one guidance value per call: the studio packs only calls with equal values (the embedding and true CFG)
    per_row_guidance = False
    size_multiple = 2  # latents are packed in 2×2 patches: pixel sizes are multiples of 16

    def __init__(self, pipe: Any) -> None:
        transformer = pipe.transformer
        sample_size = getattr(pipe, "default_sample_size", None) or 128
        super().__init__(pipe, transformer, channels=int(transformer.config.in_channels) // 4, sample_size=sample_size)
        if self.prediction_type != "flow":
            raise ValueError(f"this Flux pipeline's scheduler ({type(pipe.scheduler).__name__}) is not a flow-matching "
                             "scheduler: Flux transformers predict the flow velocity")
        self.transformer = transformer
        self.schedule = self.schedule.replace(spacing="trailing")  # FluxPipeline's sigmas = linspace(1, 1/N, N)
        self.guidance_embeds = bool(transformer.config.get("guidance_embeds", False))
        self.conditioning = Conditioning("text", pooled=True, guidance="embedding" if self.guidance_embeds else "none",
                                         true_cfg=True)
        self.default_guidance = float(call_default(pipe, "guidance_scale", 3.5)) if self.guidance_embeds else 1.0
        self.max_sequence_length = int(call_default(pipe, "max_sequence_length", 512))
        self._ids: dict[Any, torch.Tensor] = {}

    @classmethod
    def from_pipe(cls, pipe: Any) -> "FluxAdapter":
        """Wrap a ``FluxPipeline`` (or a subclass); ``FluxImg2ImgPipeline`` / ``FluxInpaintPipeline`` (the same
        transformer) are wrapped through ``FluxPipeline.from_pipe`` (shared components)."""
        from diffusers import FluxPipeline

        if not isinstance(pipe, FluxPipeline):
            if type(pipe).__name__ not in SIBLINGS or not _ordinary_network(pipe, 4):
                raise UnsupportedPipelineError
            pipe = _quiet_from_pipe(FluxPipeline, pipe)
        return cls(pipe)

    def schedule_for(self, height: int | None = None, width: int | None = None) -> Schedule:
        """The flow schedule for this image size: μ from its number of packed tokens (h/16)·(w/16) when the
        scheduler shifts dynamically (dev), the static shift otherwise (schnell)."""
        _, _, h, w = self.latent_shape(1, height, width)
        return self.schedule.at_image_seq_len((h // 2) * (w // 2))

    def kept_steps(self, num_inference_steps: int, strength: float) -> int:
        """Steps an edit with ``strength`` runs of an N-step grid: N - int(max(N - min(N·s, N), 0)), as the
        Flux img2img / inpaint pipelines' ``get_timesteps`` compute it (a fraction rounds up, unlike SD's)."""
        return num_inference_steps - int(max(num_inference_steps - min(num_inference_steps * strength,
                                                                        num_inference_steps), 0))

    # -- conditions --------------------------------------------------------------------------------------
    def _text_condition(self, num_images: int, class_labels: Any, prompt: Any, negative_prompt: Any,
                        guidance_scale: float | None, true_cfg_scale: float | None
                        ) -> tuple[float, float, list[str], list[str] | None, int]:
        if class_labels is not None:
            raise ValueError("this flux model is text-conditional: pass prompt, not class_labels")
        if guidance_scale is not None and not self.guidance_embeds:
            raise ValueError("this Flux model (schnell-type, no guidance embedding) takes no guidance_scale; for true "
                             "classifier-free guidance give negative_prompt and true_cfg_scale")
        guidance = self.default_guidance if guidance_scale is None else check_guidance(guidance_scale)
        true_cfg = 1.0 if true_cfg_scale is None else check_guidance(true_cfg_scale)
        prompts, negatives, per_prompt = prompt_batch(prompt, negative_prompt, num_images)
        if uses_guidance(true_cfg) and negatives is None:
            raise ValueError(f"true_cfg_scale {true_cfg:g} needs a negative_prompt (true classifier-free guidance "
                             "contrasts it with the prompt)")
        return guidance, true_cfg, prompts, negatives, per_prompt

    def check_condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                        negative_prompt: Any = None, guidance_scale: float | None = None,
                        true_cfg_scale: float | None = None) -> None:
        """What :meth:`condition` checks, without running the text encoders."""
        self._text_condition(num_images, class_labels, prompt, negative_prompt, guidance_scale, true_cfg_scale)

    def condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                  negative_prompt: Any = None, guidance_scale: float | None = None,
                  true_cfg_scale: float | None = None) -> dict[str, Any]:
        """T5 token embeddings and the CLIP pooled embedding of the prompt(s) (the pipeline's
        ``encode_prompt``), the guidance value (dev), and the negative prompt's embeddings when true CFG is on."""
        guidance, true_cfg, prompts, negatives, per_prompt = self._text_condition(
            num_images, class_labels, prompt, negative_prompt, guidance_scale, true_cfg_scale)
        positive, pooled, _ = self.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=self.device,
                                                      num_images_per_prompt=per_prompt,
                                                      max_sequence_length=self.max_sequence_length)
        kwargs = {"encoder_hidden_states": positive, "pooled_projections": pooled,
                  "negative_encoder_hidden_states": None, "negative_pooled_projections": None,
                  "guidance_scale": guidance if self.guidance_embeds else None, "true_cfg_scale": true_cfg}
        if uses_guidance(true_cfg):
            negative, negative_pooled, _ = self.pipe.encode_prompt(
                prompt=negatives, prompt_2=None, device=self.device, num_images_per_prompt=per_prompt,
                max_sequence_length=self.max_sequence_length)
            kwargs.update(negative_encoder_hidden_states=negative, negative_pooled_projections=negative_pooled)
        return kwargs

    # -- the network -------------------------------------------------------------------------------------
    def _image_ids(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (h, w, device, dtype)
        if key not in self._ids:
            self._ids[key] = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, device, dtype)
        return self._ids[key]

    def _transformer(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                     pooled_projections: torch.Tensor, guidance: Any = None) -> torch.Tensor:
        n, c, h, w = x.shape
        dtype = self.dtype
        packed = self.pipe._pack_latents(x.to(dtype), n, c, h, w)
        text_ids = torch.zeros(encoder_hidden_states.shape[1], 3, device=x.device, dtype=encoder_hidden_states.dtype)
        if guidance is not None:  # one value for the batch, or one per row
            guidance = (guidance.to(x.device, torch.float32) if isinstance(guidance, torch.Tensor)
                        else torch.full([1], float(guidance), device=x.device, dtype=torch.float32).expand(n))
        out = self.transformer(hidden_states=packed, timestep=t.to(dtype) / 1000, guidance=guidance,
                               pooled_projections=pooled_projections, encoder_hidden_states=encoder_hidden_states,
                               txt_ids=text_ids, img_ids=self._image_ids(h, w, x.device, encoder_hidden_states.dtype),
                               return_dict=False)[0]
        return self.pipe._unpack_latents(out, h * self.vae_scale_factor, w * self.vae_scale_factor,
                                         self.vae_scale_factor).to(x.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 pooled_projections: torch.Tensor, negative_encoder_hidden_states: torch.Tensor | None = None,
                 negative_pooled_projections: torch.Tensor | None = None, guidance_scale: Any = None,
                 true_cfg_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
        """The velocity at model time ``t`` = σ·1000 (the transformer gets σ), with the guidance embedding
        (dev) and, with a negative prompt and ``true_cfg_scale`` ≠ 1, true CFG in one doubled batch: one NFE."""
        cond = {"encoder_hidden_states": encoder_hidden_states, "pooled_projections": pooled_projections}
        uncond = None if negative_encoder_hidden_states is None else {
            "encoder_hidden_states": negative_encoder_hidden_states, "pooled_projections": negative_pooled_projections}
        return classifier_free_guidance(self._transformer, x, t, true_cfg_scale, cond, uncond, guidance=guidance_scale)
