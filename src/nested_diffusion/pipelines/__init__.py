"""Adapters from diffusers pipelines to the model-agnostic nested sampler."""

from .base import NestedPipeline, PipelineFrame, PipelineSession, UnsupportedPipelineError

__all__ = ["NestedPipeline", "PipelineFrame", "PipelineSession", "UnsupportedPipelineError"]
