"""Which decoded frames a session keeps: every frame is announced, and beyond the session's cap on
kept images the oldest frames' images are dropped — never a branch's latest frame (its metadata
stays, so the timeline is complete; the dropped PNG answers 410)."""

from __future__ import annotations

import collections
from typing import Any

from .state import Branch, StoredFrame, StudioSession

__all__ = ["FrameRetention", "frame_event"]


class FrameRetention:
    """One session's kept images, in the order they were kept."""

    def __init__(self, session: StudioSession, max_kept_images: int) -> None:
        self.session, self.max_kept_images = session, max_kept_images
        self.kept_images = 0
        self.kept: collections.deque = collections.deque()  # (branch, step) in the order kept

    def keep(self, b: Branch, frame: StoredFrame) -> None:
        """Store ``frame`` on ``b``, announce it, and drop the oldest images beyond the cap."""
        s = self.session
        b.add_frame(frame)
        if frame.images is not None:
            self.kept_images += len(frame.images)
            self.kept.append((b.id, frame.step))
        s.emit("frame", frame_event(s, b, frame))
        for _ in range(len(self.kept)):
            if self.kept_images <= self.max_kept_images:
                break
            name, step = self.kept.popleft()
            owner = s.branches.get(name)
            old = owner.frames.get(step) if owner else None
            if old is None or old.images is None:
                continue
            if step == max(owner.frames):
                self.kept.append((name, step))
                continue
            self.kept_images -= len(old.images)
            old.images = None

    def forget(self, b: Branch) -> None:
        """A pruned branch's images no longer count."""
        self.kept_images -= sum(len(f.images) for f in b.frames.values() if f.images is not None)


def frame_event(s: StudioSession, b: Branch, f: StoredFrame) -> dict[str, Any]:
    """The ``frame`` event's payload (also each frame of a snapshot)."""
    n = b.num_images if f.images is None else len(f.images)
    out = {"branch": b.id, "step": f.step, "num_steps": b.num_steps, "nfe": f.nfe, "total_nfe": b.checkpoints[-1],
           "timestep": f.timestep, "elapsed": f.elapsed, "condition_rev": f.condition_rev,
           "images": [s.frame_url(b.id, f.step, i) for i in range(n)] if f.images is not None else [],
           "compute": f.compute, "remaining_nfe": b.checkpoints[-1] - f.nfe, "eta": b.eta()}
    if f.inherited:
        out["inherited"] = True
    return out
