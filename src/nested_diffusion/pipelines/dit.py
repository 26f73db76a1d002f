"""Adapter for ``DiTPipeline``: class-conditional ``DiTTransformer2DModel`` (or the legacy
``Transformer2DModel``) on VAE latents.

The null class used for classifier-free guidance is ``transformer.config.num_embeds_ada_norm``
(1000 for the ImageNet checkpoints: the label-dropout embedding, as ``DiTPipeline`` uses). With a
learned-sigma output (``out_channels == 2 * in_channels``) only the first ``in_channels`` channels
(ε or v) are used. Guidance follows the project's one rule (:func:`~.adapter.classifier_free_guidance`).
"""

from __future__ import annotations

from typing import Any

import torch

from .adapter import Conditioning, UnsupportedPipelineError, check_guidance, check_labels, classifier_free_guidance
from .latent import LatentAdapter, call_default

__all__ = ["DiTAdapter"]


class DiTAdapter(LatentAdapter):
    """``DiTPipeline`` (ImageNet class-conditional; null class = ``num_embeds_ada_norm``)."""

    family = "dit"
    conditioning = Conditioning("class")
    per_row_guidance = True  # guidance_scale may be one scale per row (classifier_free_guidance)

    def __init__(self, pipe: Any) -> None:
        transformer = pipe.transformer
        super().__init__(pipe, transformer)
        self.transformer = transformer
        num_embeds = transformer.config.get("num_embeds_ada_norm")
        if num_embeds is None:
            raise ValueError("this DiT transformer has no class embedding (config.num_embeds_ada_norm is None)")
        self.num_classes: int = int(num_embeds)
        self.null_class: int = self.num_classes
        out_channels = transformer.config.get("out_channels") or self.channels
        self.learned_sigma = out_channels == 2 * self.channels
        self.size_multiple = int(transformer.config.get("patch_size") or 1)
        self.default_guidance = float(call_default(pipe, "guidance_scale", 4.0))
        names = getattr(pipe, "labels", None) or {}
        self.class_names: list[str] | None = None
        if names:  # DiTPipeline.labels maps each comma-separated synonym to its id: keep the shortest per id
            short: dict[int, str] = {}
            for name in sorted(names, key=lambda n: (len(n), n)):
                short.setdefault(int(names[name]), name)
            self.class_names = [short.get(i, str(i)) for i in range(self.num_classes)]

    @classmethod
    def from_pipe(cls, pipe: Any) -> "DiTAdapter":
        """Wrap a ``DiTPipeline`` (or a subclass)."""
        from diffusers import DiTPipeline

        if not isinstance(pipe, DiTPipeline):
            raise UnsupportedPipelineError
        return cls(pipe)

    def label_ids(self, names: str | list[str]) -> list[int]:
        """Class ids for ImageNet label names (the pipeline's ``get_label_ids``)."""
        return self.pipe.get_label_ids([names] if isinstance(names, str) else list(names))

    def condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                  negative_prompt: Any = None, guidance_scale: float | None = None) -> dict[str, Any]:
        """Class labels (one, or one per image); ``None`` samples unconditionally with the null class."""
        if prompt is not None or negative_prompt is not None:
            raise ValueError("this DiT model is not text-conditional: pass class_labels, not prompt")
        guidance = self.default_guidance if guidance_scale is None else check_guidance(guidance_scale)
        if class_labels is None:
            labels = torch.full((num_images,), self.null_class, dtype=torch.long)
            guidance = 1.0  # conditional and unconditional branches would be identical
        else:
            labels = check_labels(class_labels, num_images, self.num_classes)
        return {"class_labels": labels.to(self.device), "guidance_scale": guidance}

    def _transformer(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        return self.transformer(x, timestep=t, class_labels=class_labels).sample[:, : self.channels]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor,
                 guidance_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Transformer output (first ``in_channels`` channels), guided in one doubled batch: one NFE."""
        uncond = {"class_labels": torch.full_like(class_labels, self.null_class)}
        return classifier_free_guidance(self._transformer, x, t, guidance_scale, {"class_labels": class_labels}, uncond)
