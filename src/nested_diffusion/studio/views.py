"""Read-only views of the live sessions, for the routes: the snapshot a page reloads from, the
intervention log a replay needs, and kept frames as images (with their provenance for the PNG)."""

from __future__ import annotations

from typing import Any

from .frames import frame_text
from .interventions import LOG_FORMAT, LOG_VERSION, condition_history
from .sessions import CONDITION_FIELDS, Gone, NotFound, Store, _jsonable, frame_event

__all__ = ["snapshot", "log", "frame_png", "frame_sequence"]


def frame_png(store: Store, session_id: str, branch_id: str, step: int, image: int) -> tuple[Any, dict[str, Any]]:
    """The PIL image of a kept frame and its provenance (for the PNG's text chunks)."""
    with store.lock:
        s, b = store._branch(session_id, branch_id)
        f = b.frames.get(step)
        if f is None:
            raise NotFound(f"branch {b.id} has no frame at step {step} (frames: {sorted(b.frames)})")
        if f.images is None:
            raise Gone(f"frame {step} of branch {b.id} is no longer kept (the session keeps at most "
                       f"{store.limits.max_kept_images} images); its latest frame always is")
        if not 0 <= image < len(f.images):
            raise NotFound(f"image must lie in [0, {len(f.images) - 1}], got {image}")
        initial = {k: s.request[k] for k in CONDITION_FIELDS}
        history = condition_history(initial, s.ops, b.id, f.step)
        return f.images[image], frame_text(
            model=store.model_name, session=s.id, branch=b.id, kind=b.kind, seed=b.seed, session_seed=s.seed,
            step=f.step, num_steps=b.num_steps, nfe=f.nfe, timestep=f.timestep, image=image, history=history)

def frame_sequence(store: Store, session_id: str, branch_id: str, image: int) -> list[Any]:
    """Image ``image`` of every kept frame of a branch, in step order (for the GIF)."""
    with store.lock:
        s, b = store._branch(session_id, branch_id)
        frames = [f for _, f in sorted(b.frames.items()) if f.images is not None]
        if not frames:
            raise NotFound(f"branch {b.id} has no frame yet")
        if not 0 <= image < len(frames[-1].images):
            raise NotFound(f"image must lie in [0, {len(frames[-1].images) - 1}], got {image}")
        return [f.images[image] for f in frames]

def snapshot(store: Store, session_id: str) -> dict[str, Any]:
    """Everything a polling client or a reloaded page needs: branches, states, conditions, frames."""
    with store.lock:
        s = store.get(session_id)
        branches = []
        for b in s.branches.values():
            condition = dict(b.session.condition) if b.kind == "nested" else {k: s.request[k] for k in CONDITION_FIELDS}
            branches.append({**b.status(), "kind": b.kind, "parent": b.parent, "at_step": b.at_step,
                             "image": b.image, "seed": b.seed, "num_steps": b.num_steps,
                             "total_nfe": b.checkpoints[-1], "checkpoints": b.checkpoints,
                             "num_images": b.num_images, "condition": _jsonable(condition),
                             "condition_rev": b.rev, "pending": list(b.pending), "eta": b.eta(),
                             "frames": [frame_event(s, b, f) for _, f in sorted(b.frames.items())]})
        return {"session_id": s.id, "model": store.model_name, "created": s.created, "seed": s.seed,
                "request": s.request, "checkpoints": s.checkpoints, "deadline": s.request.get("deadline"),
                "last_event_id": len(s.events), "terminal": s.terminal,
                "events_url": f"/v1/sessions/{s.id}/events", "branches": branches}

def log(store: Store, session_id: str) -> dict[str, Any]:
    """The intervention log (:mod:`.interventions`): what :mod:`.replay` reproduces bit-exactly."""
    from .. import __version__

    with store.lock:
        s = store.get(session_id)
        return {"format": LOG_FORMAT, "version": LOG_VERSION, "nested_diffusion": __version__,
                "model": store.model, "dtype": store.dtype, "session_id": s.id, "request": s.request,
                "checkpoints": s.checkpoints, "ops": [dict(op) for op in s.ops]}
