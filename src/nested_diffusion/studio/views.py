"""Read-only views of the live sessions, for the routes: the snapshot a page reloads from, the
intervention log a replay needs, and kept frames as images (with their provenance for the PNG)."""

from __future__ import annotations

from typing import Any

import torch

from .build import condition_of, edit_of, initial_condition, nfe_cap
from .errors import Gone, NotFound
from .frames import frame_text
from .interventions import LOG_FORMAT, LOG_VERSION, condition_history
from .retention import frame_event
from .state import Branch, StudioSession

__all__ = ["snapshot", "log", "frame_png", "frame_sequence", "jsonable", "edit_view"]


def jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def frame_png(studio: Any, s: StudioSession, b: Branch, step: int, image: int) -> tuple[Any, dict[str, Any]]:
    """The PIL image of a kept frame and its provenance (for the PNG's text chunks)."""
    with studio.lock:
        f = b.frames.get(step)
        if f is None:
            raise NotFound(f"branch {b.id} has no frame at step {step} (frames: {sorted(b.frames)})")
        if f.images is None:
            raise Gone(f"frame {step} of branch {b.id} is no longer kept (the session keeps at most "
                       f"{studio.limits.max_kept_images} images); its latest frame always is")
        if not 0 <= image < len(f.images):
            raise NotFound(f"image must lie in [0, {len(f.images) - 1}], got {image}")
        history = condition_history(initial_condition(s.request), s.ops, b.id, f.step)
        return f.images[image], frame_text(
            model=studio.model_name, session=s.id, branch=b.id, kind=b.kind, seed=b.seed, session_seed=s.seed,
            step=f.step, num_steps=b.num_steps, nfe=f.nfe, timestep=f.timestep, image=image, history=history)


def frame_sequence(studio: Any, b: Branch, image: int) -> list[Any]:
    """Image ``image`` of every kept frame of a branch, in step order (for the GIF)."""
    with studio.lock:
        frames = [f for _, f in sorted(b.frames.items()) if f.images is not None]
        if not frames:
            raise NotFound(f"branch {b.id} has no frame yet")
        if not 0 <= image < len(frames[-1].images):
            raise NotFound(f"image must lie in [0, {len(frames[-1].images) - 1}], got {image}")
        return [f.images[image] for f in frames]


def snapshot(studio: Any, s: StudioSession) -> dict[str, Any]:
    """Everything a polling client or a reloaded page needs: branches, states, conditions, frames."""
    with studio.lock:
        branches = []
        for b in s.branches.values():
            condition = dict(b.session.condition) if b.kind == "nested" else condition_of(s.request)
            branches.append({**b.status(), "kind": b.kind, "parent": b.parent, "at_step": b.at_step,
                             "image": b.image, "seed": b.seed, "num_steps": b.num_steps,
                             "total_nfe": b.checkpoints[-1], "checkpoints": b.checkpoints,
                             "num_images": b.num_images, "condition": jsonable(condition),
                             "condition_rev": b.rev, "pending": list(b.pending), "eta": b.eta(),
                             "edit": edit_view(s, b.edit),
                             "frames": [frame_event(s, b, f) for _, f in sorted(b.frames.items())]})
        return {"session_id": s.id, "model": studio.model_name, "created": s.created, "seed": s.seed,
                "request": s.request, "checkpoints": s.checkpoints, "deadline": s.request.get("deadline"),
                "device": s.device, "last_event_id": len(s.log), "terminal": s.terminal,
                "events_url": f"/v1/sessions/{s.id}/events", "branches": branches,
                "edit": edit_view(s, edit_of(s.request))}


def edit_view(s: StudioSession, edit: dict[str, Any] | None) -> dict[str, Any] | None:
    """An edit's input, mask and strength with the URLs of its images (``None``: no edit)."""
    if edit is None:
        return None
    urls = {f"{k}_url": None if edit.get(k) is None else f"/v1/sessions/{s.id}/images/{edit[k]}.png"
            for k in ("image", "mask_image")}
    return {"image": edit["image"], "mask_image": edit["mask_image"], "strength": edit["strength"], **urls}


def log(studio: Any, s: StudioSession) -> dict[str, Any]:
    """The intervention log (:mod:`.interventions`): what :mod:`.replay` reproduces — bit-exactly when
    the server ran unbatched (``"batched": false``), within the batching tolerance otherwise."""
    from .. import __version__

    with studio.lock:
        return {"format": LOG_FORMAT, "version": LOG_VERSION, "nested_diffusion": __version__,
                "model": studio.model, "dtype": studio.dtype, "session_id": s.id, "request": s.request,
                "nfe_cap": nfe_cap(s.request, studio.limits.max_nfe), "batched": studio.batching,
                "checkpoints": s.checkpoints, "ops": [dict(op) for op in s.ops],
                "images": {key: image.data_url() for key, image in s.images.items()}}
