"""From a session request to the library's sessions — the one translation the server and
:mod:`.replay` share, so that a log replays into exactly the sessions the server ran.

A request (``CreateSession.model_dump()``) becomes ``NestedPipeline.anytime(...)`` with the same
seed and, with ``compare_vanilla``, the vanilla DDIM (η = 1) lane with as many NFEs and the same x_T.
Frames beyond :func:`nfe_cap` are not planned.
"""

from __future__ import annotations

from typing import Any

import torch

from ..defaults import DEFAULT_BUDGET
from .state import CONDITION_FIELDS

__all__ = ["condition_of", "anytime_kwargs", "nfe_cap", "build_root", "build_lane", "session_checkpoints",
           "vanilla_kwargs"]


def condition_of(request: dict[str, Any]) -> dict[str, Any]:
    """The condition fields of a request (those the model does not take are ``None``)."""
    return {k: request.get(k) for k in CONDITION_FIELDS}


def nfe_cap(request: dict[str, Any], max_nfe: int) -> int:
    """NFEs a session may spend: its ``budget``; the project default without a layout; the server's
    ``max_nfe`` for a fixed layout (``inner_steps``)."""
    if request.get("budget") is not None:
        return request["budget"]
    return DEFAULT_BUDGET if request.get("inner_steps") is None else max_nfe


def anytime_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    """Arguments of :meth:`NestedPipeline.anytime` (the generator is added by the caller). A sampler
    whose η is fixed by its name (``ddpm``, ``…-sde``) gets that η, whatever the plan's."""
    from ..samplers import SAMPLERS

    sampler = request.get("inner_sampler")
    inner_eta = SAMPLERS[sampler][1] if sampler is not None and SAMPLERS[sampler][2] else None
    budget = request.get("budget")  # (a request of this version never has both budget and inner_steps)
    if budget is None and request.get("inner_steps") is None:
        budget = DEFAULT_BUDGET
    return dict(**condition_of(request), num_images=request["num_images"], budget=budget,
                outer_steps=request.get("outer_steps"), inner_steps=request.get("inner_steps"), inner_sampler=sampler,
                inner_eta=inner_eta, height=request.get("height"), width=request.get("width"))


def session_checkpoints(session: Any, cap: int | None) -> list[int]:
    """The NFE counts after each frame a session will show: its checkpoints within ``cap``."""
    all_checkpoints = session.checkpoints()
    checkpoints = [c for c in all_checkpoints if cap is None or c <= cap]
    if not checkpoints:
        raise ValueError(f"budget {cap} is smaller than the first outer step ({all_checkpoints[0]} NFEs)")
    return checkpoints


def build_root(pipe: Any, request: dict[str, Any]) -> Any:
    """The root branch's library session (PIL frames)."""
    return pipe.anytime(**anytime_kwargs(request), generator=torch.Generator().manual_seed(request["seed"]),
                        output_type="pil")


def vanilla_kwargs(request: dict[str, Any], steps: int) -> dict[str, Any]:
    """``NestedPipeline.vanilla`` arguments of the comparison lane: DDIM (η = 1) with ``steps`` NFEs."""
    return dict(num_inference_steps=steps, sampler="ddim", eta=1.0, num_images=request["num_images"],
                height=request.get("height"), width=request.get("width"), **condition_of(request))


def build_lane(pipe: Any, request: dict[str, Any], steps: int) -> Any:
    """The vanilla lane's library session (latent frames, decoded at the nested checkpoints)."""
    return pipe.vanilla(**vanilla_kwargs(request, steps), generator=torch.Generator().manual_seed(request["seed"]),
                        output_type="latent")
