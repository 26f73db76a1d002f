"""From a session request to the library's sessions — the one translation the server and
:mod:`.replay` share, so that a log replays into exactly the sessions the server ran.

A request (``CreateSession.model_dump()``) becomes ``NestedPipeline.anytime(...)`` with the same
seed and, with ``compare_vanilla``, the vanilla DDIM (η = 1) lane with as many NFEs and the same x_T.
An edit (``image``, prepared: :mod:`.editing`) becomes ``anytime(image=, mask_image=, strength=)`` — or,
for a mask on a pixel-space model, nested DDRM (``restore``) — and its lane the vanilla edit (DDRM) with
as many NFEs. Frames beyond :func:`nfe_cap` are not planned.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..defaults import DEFAULT_BUDGET
from .editing import kept_pixels, route, strength_of
from .state import CONDITION_FIELDS

__all__ = ["condition_of", "edit_of", "initial_condition", "anytime_kwargs", "nfe_cap", "build_root", "build_lane",
           "session_checkpoints", "vanilla_kwargs"]

Images = Mapping[str, Any]  # image id → StoredImage (the session's prepared input and masks)


def condition_of(request: dict[str, Any]) -> dict[str, Any]:
    """The condition fields of a request (those the model does not take are ``None``)."""
    return {k: request.get(k) for k in CONDITION_FIELDS}


def edit_of(request: dict[str, Any]) -> dict[str, Any] | None:
    """An edit request's input, mask and strength (the default filled in); ``None`` for a generation."""
    if request.get("image") is None:
        return None
    return {"image": request["image"], "mask_image": request.get("mask_image"), "strength": strength_of(request)}


def initial_condition(request: dict[str, Any]) -> dict[str, Any]:
    """What a session's first frame saw: its condition, and for an edit its input, mask and strength."""
    return {**condition_of(request), **(edit_of(request) or {})}


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


def _restore_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    """``restore`` arguments of a DDRM-route request (class-conditional or unconditional pixel models)."""
    return dict(class_labels=request.get("class_labels"), guidance_scale=request.get("guidance_scale"),
                num_images=request["num_images"], height=request.get("height"), width=request.get("width"))


def _inpainting(pipe: Any, request: dict[str, Any], images: Images) -> Any:
    from ..restoration import Inpainting

    return Inpainting(kept_pixels(images[request["mask_image"]].image, pipe.adapter.channels))


def build_root(pipe: Any, request: dict[str, Any], images: Images | None = None) -> Any:
    """The root branch's library session (PIL frames); ``images`` holds an edit's prepared input and mask."""
    generator = torch.Generator().manual_seed(request["seed"])
    kind = route(pipe.adapter, request)
    if kind == "ddrm":
        kwargs = anytime_kwargs(request)
        return pipe.restore(images[request["image"]].image, _inpainting(pipe, request, images), 0.0,
                            outer_steps=kwargs["outer_steps"], inner_steps=kwargs["inner_steps"],
                            budget=kwargs["budget"], generator=generator, output_type="pil", **_restore_kwargs(request))
    edit = {} if kind is None else dict(
        image=images[request["image"]].image, strength=strength_of(request),
        mask_image=None if request.get("mask_image") is None else images[request["mask_image"]].image)
    return pipe.anytime(**anytime_kwargs(request), **edit, generator=generator, output_type="pil")


def vanilla_kwargs(request: dict[str, Any], steps: int) -> dict[str, Any]:
    """``NestedPipeline.vanilla`` arguments of the comparison lane: DDIM (η = 1) with ``steps`` NFEs."""
    return dict(num_inference_steps=steps, sampler="ddim", eta=1.0, num_images=request["num_images"],
                height=request.get("height"), width=request.get("width"), **condition_of(request))


def build_lane(pipe: Any, request: dict[str, Any], steps: int, images: Images | None = None) -> Any:
    """The vanilla lane's library session (latent frames, decoded at the nested checkpoints): for an edit,
    the vanilla edit whose grid keeps ``steps`` steps, or DDRM with ``steps`` NFEs on the DDRM route."""
    generator = torch.Generator().manual_seed(request["seed"])
    kind = route(pipe.adapter, request)
    if kind == "ddrm":
        return pipe.restore(images[request["image"]].image, _inpainting(pipe, request, images), 0.0, method="ddrm",
                            steps=steps, generator=generator, output_type="latent", **_restore_kwargs(request))
    kwargs = vanilla_kwargs(request, steps)
    if kind == "edit":
        from ..pipelines.editing import edit_timesteps

        a, strength = pipe.adapter, strength_of(request)
        _, kwargs["num_inference_steps"] = edit_timesteps(a, a.schedule_for(request.get("height"), request.get("width")),
                                                          steps, strength)
        kwargs.update(image=images[request["image"]].image, strength=strength,
                      mask_image=None if request.get("mask_image") is None else images[request["mask_image"]].image)
    return pipe.vanilla(**kwargs, generator=generator, output_type="latent")
