"""The studio's state: sessions, their branches, kept frames and the numbered event log.

A :class:`Branch` changes only through its own methods — each state change announces itself on the
session's event log and, where it ends the branch, in the intervention log — so that the rules of
the state machine (``running ⇄ paused``, then one of ``stopped done expired error``) live in one place.
Callers hold the studio's lock.

A step is computed outside the lock on a private fork of the branch's
:class:`~nested_diffusion.pipelines.PipelineSession` (:meth:`Branch.begin_step`) and committed
(:meth:`Branch.commit_step`) only if the branch is still running: handlers always see a committed
state, a Stop or Pause answered at step k stays at step k, and a fork copies the parent exactly as it
was after its last step.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .interventions import due_changes

__all__ = ["STATES", "TERMINAL", "CONDITION_FIELDS", "EDIT_FIELDS", "Event", "EventLog", "StoredFrame", "Branch", "StudioSession"]

STATES = ("running", "paused", "stopped", "done", "expired", "error")
TERMINAL = frozenset({"stopped", "done", "expired", "error"})
CONDITION_FIELDS = ("class_labels", "prompt", "negative_prompt", "guidance_scale")
#: what an edit adds to a session request; ``mask_image`` and ``strength`` may change mid-run
EDIT_FIELDS = ("image", "mask_image", "strength")


@dataclass(frozen=True)
class Event:
    """One server-sent event; ``id`` counts from 1 across the session."""

    id: int
    type: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        return f"id: {self.id}\nevent: {self.type}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n".encode()


class EventLog:
    """A session's events (ids = positions + 1) and the streams waiting on them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.subscribers: set = set()

    def __len__(self) -> int:
        return len(self.events)

    def emit(self, type: str, data: dict[str, Any]) -> Event:
        event = Event(len(self.events) + 1, type, data)
        self.events.append(event)
        self.wake()
        return event

    def after(self, cursor: int) -> list[Event]:
        return self.events[cursor:]

    def wake(self) -> None:
        for subscriber in list(self.subscribers):
            subscriber.notify()


@dataclass
class StoredFrame:
    """A kept frame; ``images`` (PIL) is ``None`` once dropped by the kept-images cap."""

    step: int
    nfe: int
    timestep: Any
    elapsed: float
    compute: float
    condition_rev: int
    images: list[Any] | None
    inherited: bool = False


class Branch:
    """One trajectory: a library session, its state word, its frames and pending condition edits.

    ``step`` is the number of frames behind its state (the outer steps done, for the vanilla lane the
    checkpoints reached); ``checkpoints`` the NFE count after each frame it will produce."""

    def __init__(self, owner: "StudioSession", id: str, kind: str, session: Any, checkpoints: list[int], seed: int, *,
                 parent: str | None = None, at_step: int = 0, image: int | None = None, rev: int = 0,
                 edit: dict[str, Any] | None = None) -> None:
        self.owner, self.id, self.kind, self.session = owner, id, kind, session
        self.checkpoints, self.seed = checkpoints, seed
        self.parent, self.at_step, self.image, self.rev = parent, at_step, image, rev
        #: an edit's input, mask and strength as the last committed step used them (``None``: no edit)
        self.edit = None if edit is None else dict(edit)
        self.state = "running"
        self.frames: dict[int, StoredFrame] = {}
        self.pending: list[dict[str, Any]] = []  # condition edits not yet seen: {"rev", "applies_from_step", "changes"}
        self.cancel = threading.Event()
        self.in_flight = False
        self.error: str | None = None
        self.reason: str | None = None
        self.seconds_per_nfe: float | None = None  # wall clock, contention included: the ETA's rate
        self._mark: tuple[float, int] | None = None

    # -- read ---------------------------------------------------------------------------------------
    @property
    def nfe(self) -> int:
        return self.session.nfe

    @property
    def step(self) -> int:
        return bisect.bisect_right(self.checkpoints, self.nfe)

    @property
    def num_steps(self) -> int:
        return len(self.checkpoints)

    @property
    def finished(self) -> bool:
        return self.nfe >= self.checkpoints[-1]

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def runnable(self) -> bool:
        return self.state == "running" and not self.in_flight

    @property
    def num_images(self) -> int:
        return len(self.session.core.x)

    @property
    def remaining_work(self) -> int:
        """Image-NFEs still to compute (0 once terminal): the device's load."""
        return 0 if self.terminal else self.num_images * (self.checkpoints[-1] - self.nfe)

    def eta(self) -> float | None:
        """Seconds to the last frame: the exact remaining NFEs times the measured seconds per NFE."""
        if self.seconds_per_nfe is None:
            return None
        return round((self.checkpoints[-1] - self.nfe) * self.seconds_per_nfe, 3)

    def status(self) -> dict[str, Any]:
        out = {"branch": self.id, "state": self.state, "step": self.step, "nfe": self.nfe}
        if self.reason:
            out["reason"] = self.reason
        if self.error:
            out["error"] = self.error
        return out

    def condition(self) -> dict[str, Any]:
        """The condition the next step will see once every queued edit applies (edits in rev order)."""
        condition = dict(self.session.condition)
        for edit in sorted(self.pending, key=lambda p: p["rev"]):
            condition.update({k: v for k, v in edit["changes"].items() if k not in EDIT_FIELDS})
        return condition

    # -- the state machine ------------------------------------------------------------------------------
    def _set(self, state: str, reason: str | None = None, record: bool = True) -> None:
        self.state, self.reason = state, reason
        if state != "running":
            self.cancel.set()  # a step in flight is cancelled within one network call
            self._mark = None  # the ETA's rate restarts when the branch runs again
        if record and state in TERMINAL and state != "done":
            self.owner.record("stop", branch=self.id, at_step=self.step, reason=reason or state)
        self.owner.emit("status", self.status())

    def pause(self) -> bool:
        """``running`` → ``paused`` (``False`` if already paused); other states cannot pause."""
        if self.state == "paused":
            return False
        if self.state != "running":
            raise ValueError(f"branch {self.id} is {self.state}: only a running branch can be paused")
        self.owner.record("pause", branch=self.id, at_step=self.step)
        self._set("paused")
        return True

    def resume(self) -> bool:
        """``paused`` → ``running`` (``False`` if already running); terminal branches cannot resume."""
        if self.state == "running":
            return False
        if self.state != "paused":
            raise ValueError(f"branch {self.id} is {self.state}: only a paused branch can be resumed "
                             "(fork it to continue)")
        self.owner.record("resume", branch=self.id, at_step=self.step)
        self._set("running")
        return True

    def stop(self, reason: str = "user") -> bool:
        """End a live branch with its last complete frame (``False`` if it already ended)."""
        if self.terminal:
            return False
        self._set("expired" if reason == "expired" else "stopped", reason)
        return True

    def prune(self) -> None:
        """The branch is deleted: stop it quietly and record the prune."""
        if not self.terminal:
            self.state, self.reason = "stopped", "pruned"
            self.cancel.set()
        self.owner.record("stop", branch=self.id, at_step=self.step, reason="pruned")
        self.owner.emit("status", {**self.status(), "state": "stopped", "pruned": True})

    def finish_if_done(self) -> bool:
        """A running branch whose last checkpoint is reached becomes ``done``."""
        if self.state == "running" and self.finished:
            self._set("done")
            return True
        return False

    # -- condition edits ------------------------------------------------------------------------------
    def add_frame(self, frame: StoredFrame) -> None:
        """Keep ``frame`` as this branch's frame at ``frame.step``."""
        self.frames[frame.step] = frame

    def check_editable(self) -> None:
        """Raise ``ValueError`` if this branch takes no condition edits."""
        if self.kind != "nested":
            raise ValueError("the vanilla preview lane takes no interventions: it shows what a vanilla sampler shows")
        if self.terminal:
            raise ValueError(f"branch {self.id} is {self.state}: fork it to continue with another condition")

    def queue_edit(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Queue a condition edit; its receipt names the first outer step that sees it (the next one,
        or the one after if a step is being computed now)."""
        self.check_editable()
        self.owner.rev_count += 1
        edit = {"rev": self.owner.rev_count, "applies_from_step": self.step + 1 + (1 if self.in_flight else 0),
                "changes": changes}
        self.pending.append(edit)
        self.owner.record("condition", branch=self.id, **edit)
        self.owner.emit("condition", {"branch": self.id, "rev": edit["rev"], "applies_from_step": edit["applies_from_step"],
                                      "fields": sorted(changes)})
        return edit

    # -- steps (the worker's side) ----------------------------------------------------------------------
    def begin_step(self) -> tuple[Any, dict[str, Any], threading.Event]:
        """Mark a step in flight: ``(private fork to compute on, condition changes due, cancel token)``."""
        changes, _ = due_changes(self.pending, self.step + 1)
        self.in_flight, self.cancel = True, threading.Event()
        if self._mark is None:
            self._mark = (time.perf_counter(), self.nfe)
        return self.session.fork(), changes, self.cancel

    def commit_step(self, work: Any, cancel: threading.Event) -> bool:
        """Adopt a computed step if the branch is still running and the step was not cancelled."""
        self.in_flight = False
        if self.owner.closed or self.owner.branches.get(self.id) is not self or self.state != "running" \
                or cancel.is_set():
            return False
        applied = [p["rev"] for p in self.pending if p["applies_from_step"] <= self.step + 1]
        changes, self.pending = due_changes(self.pending, self.step + 1)
        self.rev = max([self.rev, *applied])
        self.session = work
        if self.edit is not None:
            self.edit.update({k: v for k, v in changes.items() if k in EDIT_FIELDS})
        if "strength" in changes:  # a nested edit's outer process was replanned: its frames come at other NFEs
            cap = self.owner.nfe_cap
            self.checkpoints = [c for c in work.checkpoints() if cap is None or c <= cap]
        now = time.perf_counter()
        rate = (now - self._mark[0]) / max(1, self.nfe - self._mark[1])
        self.seconds_per_nfe = rate if self.seconds_per_nfe is None else 0.5 * self.seconds_per_nfe + 0.5 * rate
        self._mark = (now, self.nfe)
        return True

    def abort_step(self, error: BaseException, deadline: type, cancelled: type) -> None:
        """A step that raised: a missed deadline stops the branch, a cancelled step changes nothing
        (its branch was paused, stopped or pruned), anything else marks the branch ``error``."""
        self.in_flight = False
        self._mark = None
        if self.owner.closed or self.owner.branches.get(self.id) is not self or self.state != "running":
            return
        if isinstance(error, deadline):
            self._set("stopped", "deadline")
        elif not isinstance(error, cancelled):
            self.error = f"{type(error).__name__}: {error}"
            self._set("error", "error")


@dataclass
class StudioSession:
    """One ``POST /v1/sessions``: its branches, its event log and its intervention log
    (:mod:`.interventions`), on one device."""

    id: str
    request: dict[str, Any]
    checkpoints: list[int]
    seed: int
    created: float  # time.time()
    started: float  # time.perf_counter()
    deadline_at: float | None
    device: int = 0
    branches: dict[str, Branch] = field(default_factory=dict)
    log: EventLog = field(default_factory=EventLog)
    ops: list[dict[str, Any]] = field(default_factory=list)
    streams: int = 0
    last_activity: float = 0.0
    forked: int = 0  # branches created by forks (named b1, b2, …)
    rev_count: int = 0
    rr: int = 0
    closed: bool = False
    retention: Any = None  # the session's FrameRetention (set by the registry)
    nfe_cap: int | None = None  # the NFEs a branch may plan (build.nfe_cap)
    #: an edit's prepared input and masks by id (:mod:`.editing`); the log carries them inline
    images: dict[str, Any] = field(default_factory=dict)
    #: the sizes ``(width, height)`` a mask may have: the uploaded input's and the edit's
    mask_sizes: list[tuple[int, int]] = field(default_factory=list)

    def emit(self, type: str, data: dict[str, Any]) -> Event:
        return self.log.emit(type, data)

    def record(self, op: str, **fields: Any) -> None:
        self.ops.append({"op": op, **fields, "t": round(time.perf_counter() - self.started, 3)})

    def add_branch(self, b: Branch) -> Branch:
        self.branches[b.id] = b
        self.emit("status", b.status())
        return b

    @property
    def terminal(self) -> bool:
        return self.closed or all(b.terminal for b in self.branches.values())

    @property
    def remaining_work(self) -> int:
        return sum(b.remaining_work for b in self.branches.values())

    def frame_url(self, branch: str, step: int, image: int) -> str:
        return f"/v1/sessions/{self.id}/branches/{branch}/frames/{step}/{image}.png"

    def close(self) -> None:
        """Deleted or expired: cancel every step in flight and end the streams."""
        self.closed = True
        for b in self.branches.values():
            b.cancel.set()
        self.log.wake()
