"""What a device's worker runs next, and how a computed step is committed.

A :class:`Unit` is one branch's next frame: one outer step (for the vanilla lane, its steps up to the
next nested checkpoint), computed on a private fork. :func:`next_units` picks the runnable branches of
one device round-robin — over sessions, and within a session over its branches — so no session
starves; :func:`commit` keeps the frame if the branch is still running, :func:`fail` settles a step
that raised (deadline, cancellation or error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..session import DeadlineExceeded, StepCancelled
from .editing import apply_changes
from .state import Branch, StoredFrame, StudioSession

__all__ = ["Unit", "next_units", "commit", "fail", "routed"]

_order = itertools.count()


@contextlib.contextmanager
def routed(work: Any, network: Callable | None) -> Iterator[Any]:
    """Run ``work``'s next step with its network calls sent to ``network`` (a :class:`~.batching.Batcher`
    stand-in); ``None`` leaves the adapter in place. Only the private fork's core session sees it, and
    gets its own model back afterwards (a committed session never holds the stand-in)."""
    model = work.core.model
    if network is not None:
        work.core.model = network
    try:
        yield work
    finally:
        work.core.model = model


@dataclass
class Unit:
    """One branch's next frame, computed on ``work`` (a private fork), outside the studio's lock."""

    session: StudioSession
    branch: Branch
    work: Any
    changes: dict[str, Any]
    cancel: threading.Event
    deadline_at: float | None
    target_nfe: int
    order: int = dataclasses.field(default_factory=lambda: next(_order))

    def advance(self, network: Callable | None = None) -> Any:
        """Compute the frame. Raises like :meth:`Session.step` when interrupted; the branch's
        committed session is untouched either way."""
        if self.changes:
            apply_changes(self.work, self.changes, self.session.request, self.session.images)
        with routed(self.work, network):
            if self.branch.kind == "nested":
                return self.work.step(self.deadline_at, self.cancel)
            frame = None  # the vanilla lane: one NFE per step up to the next nested checkpoint, decoded there
            while self.work.nfe < self.target_nfe:
                frame = self.work.step(self.deadline_at, self.cancel)
        return dataclasses.replace(frame, images=self.work.decode(frame.latents, "pil"))


def next_units(sessions: list[StudioSession], device: int, start: int, limit: int | None) -> tuple[list[Unit], int]:
    """Up to ``limit`` (None: all) runnable branches of ``device``'s sessions, round-robin from session
    ``start``; returns the units (their steps marked in flight) and the next start (call with the lock
    held)."""
    mine = [s for s in sessions if s.device == device and not s.closed]
    units: list[Unit] = []
    for i in range(len(mine)):
        s = mine[(start + i) % len(mine)]
        branches = list(s.branches.values())
        for j in range(len(branches)):
            b = branches[(s.rr + j) % len(branches)]
            if not b.runnable:
                continue
            if b.finish_if_done():  # e.g. a fork of a branch whose last step completed meanwhile
                continue
            work, changes, cancel = b.begin_step()
            units.append(Unit(s, b, work, changes, cancel, s.deadline_at, b.checkpoints[b.step]))
            if limit is not None and len(units) >= limit:
                s.rr = (s.rr + j + 1) % len(branches)
                return units, (start + i + 1) % len(mine)
        s.rr = (s.rr + 1) % max(1, len(branches))
    return units, (start + 1) % max(1, len(mine))


def commit(unit: Unit, frame: Any) -> bool:
    """Keep a computed frame if its branch is still running (call with the lock held)."""
    s, b = unit.session, unit.branch
    if not b.commit_step(unit.work, unit.cancel):
        return False
    now = time.perf_counter()
    s.retention.keep(b, StoredFrame(step=b.step, nfe=frame.nfe, timestep=frame.timestep,
                                        elapsed=round(now - s.started, 3), compute=round(frame.elapsed, 3),
                                        condition_rev=b.rev, images=list(frame.images)))
    b.finish_if_done()
    return True


def fail(unit: Unit, error: BaseException) -> None:
    """A step that raised (call with the lock held)."""
    unit.branch.abort_step(error, DeadlineExceeded, StepCancelled)
