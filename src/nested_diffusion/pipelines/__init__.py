"""Adapters from diffusers pipelines to the model-agnostic nested sampler.

``adapter`` (the interface and shared rules) ← family modules (``unet2d``, ``latent``,
``stable_diffusion``, ``dit``) ← ``pipeline`` (the registry and :class:`NestedPipeline`);
``session`` holds :class:`PipelineSession`. Imports run one way.
"""

from .adapter import Adapter, UnsupportedPipelineError
from .pipeline import ADAPTERS, NestedPipeline
from .session import OUTPUT_TYPES, PipelineFrame, PipelineSession

__all__ = ["ADAPTERS", "Adapter", "NestedPipeline", "OUTPUT_TYPES", "PipelineFrame", "PipelineSession",
           "UnsupportedPipelineError"]
