"""The interventions on a branch — pause, resume, stop, prune, a condition edit, an edit's new mask or
strength, a fork — each checked against the branch's state (409 when it does not allow it) and recorded
in the intervention log (:mod:`.interventions`). Callers pass the body already validated by the contract."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .conditions import check_condition
from .errors import Conflict
from .interventions import fork_seed
from .limits import Limits
from .state import Branch, StudioSession

__all__ = ["control", "prune", "set_condition", "set_edit", "fork", "ACTIONS"]

ACTIONS = ("pause", "resume", "stop")


def control(b: Branch, action: str) -> dict[str, Any]:
    """``pause``, ``resume`` or ``stop`` a branch; idempotent where the state already matches."""
    try:
        {"pause": b.pause, "resume": b.resume, "stop": b.stop}[action]()
    except ValueError as e:
        raise Conflict(str(e)) from None
    return b.status()


def prune(s: StudioSession, b: Branch) -> None:
    """Delete a branch and its frames (its children live on)."""
    b.prune()
    del s.branches[b.id]
    s.retention.forget(b)


def set_condition(adapter: Any, b: Branch, changes: dict[str, Any]) -> dict[str, Any]:
    """Queue a condition edit after checking the resulting condition against the branch's images
    (a condition the model takes but that does not fit this branch is a 409)."""
    try:
        b.check_editable()
    except ValueError as e:
        raise Conflict(str(e)) from None
    try:
        check_condition(adapter, b.num_images, {**b.condition(), **changes})
    except ValueError as e:
        raise Conflict(f"{e} (branch {b.id} holds {b.num_images} images)") from None
    edit = b.queue_edit(changes)
    return {"rev": edit["rev"], "applies_from_step": edit["applies_from_step"]}


def set_edit(adapter: Any, uploads: Any, s: StudioSession, b: Branch, changes: dict[str, Any]) -> dict[str, Any]:
    """Queue an edit change (``mask_image``: an uploaded image id; ``strength``) after checking it against the
    session: an edit, of the kind the change needs, with a mask of the input's size (409 otherwise). The
    mask is kept prepared (:mod:`.editing`) and logged by its id."""
    from .editing import kept_pixels, prepare_mask, route

    try:
        b.check_editable()
    except ValueError as e:
        raise Conflict(str(e)) from None
    kind = route(adapter, s.request)
    if kind is None:
        raise Conflict(f"session {s.id!r} is no edit (it was started without image): nothing to mask or re-strength")
    changes = dict(changes)
    if changes.get("strength") is not None and kind == "ddrm":
        raise Conflict("inpainting on this pixel-space model is nested DDRM, which starts from noise: its strength "
                       "stays 1 (change the mask instead)")
    if changes.get("mask_image") is not None:
        if s.request.get("mask_image") is None:
            raise Conflict(f"session {s.id!r} is an image-to-image edit without a mask: start an inpainting session "
                           "(with mask_image) to paint one")
        upload = uploads.get(changes["mask_image"])
        if upload is None:
            raise Conflict(f"no uploaded image {changes['mask_image']!r} (POST /v1/images; the server keeps the "
                           "latest uploads only)")
        height, width = s.request["height"], s.request["width"]
        try:
            mask = prepare_mask(upload, s.mask_sizes, height, width)
            if kind == "ddrm":
                kept_pixels(mask.image, adapter.channels)
        except ValueError as e:
            raise Conflict(str(e)) from None
        s.images[mask.id] = mask
        changes["mask_image"] = mask.id
    edit = b.queue_edit(changes)
    return {"rev": edit["rev"], "applies_from_step": edit["applies_from_step"]}


def fork(s: StudioSession, b: Branch, req: Any, limits: Limits) -> dict[str, Any]:
    """New branches from ``b``'s last completed step, each with its own noise."""
    if b.kind != "nested":
        raise Conflict("the vanilla preview lane cannot be forked")
    if b.finished or b.state == "error":
        raise Conflict(f"branch {b.id} is {'done' if b.finished else b.state}: nothing left to continue")
    n_new = 1 if req.image is not None else req.count
    if len(s.branches) + n_new > limits.max_branches:
        raise Conflict(f"a session holds at most {limits.max_branches} branches ({len(s.branches)} now): prune some first")
    if req.image is not None and req.image >= b.num_images:
        raise Conflict(f"image must lie in [0, {b.num_images - 1}] (branch {b.id} holds {b.num_images} images), "
                       f"got {req.image}")
    names = [f"b{s.forked + j + 1}" for j in range(n_new)]
    seeds = req.seeds or [fork_seed(s.seed, s.forked + j + 1) for j in range(n_new)]
    s.forked += n_new
    indices = None if req.image is None else [req.image] * req.count
    at_step = b.step
    children = [Branch(s, name, "nested", b.session.fork(torch.Generator().manual_seed(seed), indices), b.checkpoints,
                       seed, parent=b.id, at_step=at_step, image=req.image, rev=b.rev, edit=b.edit)
                for name, seed in zip(names, seeds)]
    s.record("fork", parent=b.id, at_step=at_step, branches=names, seeds=seeds, image=req.image, count=req.count)
    s.emit("fork", {"parent": b.id, "at_step": at_step, "branches": names, "seeds": seeds, "image": req.image,
                    "count": req.count})
    source = b.frames.get(at_step)
    for child in children:
        s.add_branch(child)
        if source is not None:  # the child's history starts with the parent's frame it grew from
            images = None if source.images is None else \
                list(source.images) if indices is None else [source.images[i] for i in indices]
            s.retention.keep(child, dataclasses.replace(source, images=images, inherited=True))
    return {"branches": names, "at_step": at_step, "seeds": seeds}
