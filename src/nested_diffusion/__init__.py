"""nested-diffusion: anytime image generation with pretrained diffusion models.

Implements *Nested Diffusion Processes for Anytime Image Generation* (Elata et al., WACV 2024):
``nested_sample`` yields a sample-quality image after every outer step, and its final image
matches a vanilla sampler with the same number of network evaluations; ``vanilla_sample`` is
the baseline whose frames are the usual one-step x̂0 previews. Every entry point takes a noise
schedule from :mod:`nested_diffusion.schedules` — a discrete VP ᾱ table (a 1-D tensor will do) or
rectified flow (``flow_matching(shift)``, SD3/Flux-style). ``nested_restore`` and
``ddrm_sample`` do the same for linear inverse problems (operators in ``nested_diffusion.restoration``).

Names are imported lazily (PEP 562) so that the command line starts without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "nested_sample": "nested",
    "NestedSession": "nested",
    "vanilla_sample": "vanilla",
    "VanillaSession": "vanilla",
    "Session": "session",
    "Frame": "session",
    "make_denoiser": "denoiser",
    "resolve_layout": "planner",
    "plan_layout": "planner",
    "Layout": "planner",
    "flow_matching": "schedules",
    "DiscreteVP": "schedules",
    "FlowMatching": "schedules",
    "Schedule": "schedules",
    "NestedPipeline": "pipelines",
    "PipelineSession": "pipelines",
    "PipelineFrame": "pipelines",
    "nested_restore": "restoration",
    "NestedRestoreSession": "restoration",
    "ddrm_sample": "restoration",
    "DDRMSession": "restoration",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .denoiser import make_denoiser
    from .nested import NestedSession, nested_sample
    from .pipelines import NestedPipeline, PipelineFrame, PipelineSession
    from .planner import Layout, plan_layout, resolve_layout
    from .schedules import DiscreteVP, FlowMatching, Schedule, flow_matching
    from .restoration import DDRMSession, NestedRestoreSession, ddrm_sample, nested_restore
    from .session import Frame, Session
    from .vanilla import VanillaSession, vanilla_sample


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
