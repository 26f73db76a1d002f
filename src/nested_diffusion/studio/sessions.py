"""Live studio sessions: branches, kept frames, the numbered event log, the intervention log, caps
and idle expiry — everything the HTTP handlers and the worker share.

One lock guards it all. The worker computes a step *outside* the lock, on a private fork of the
branch's :class:`~nested_diffusion.pipelines.PipelineSession`, and commits it under the lock only
if the branch is still running: handlers always see a committed state, a Stop or Pause answered
at step k stays at step k, and a fork copies the parent exactly as it was after its last step.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..defaults import DEFAULT_BUDGET, DEFAULT_INNER_SAMPLER
from ..session import DeadlineExceeded, StepCancelled
from .interventions import ROOT, VANILLA, due_changes, fork_seed
from .limits import Limits
from .schemas import ConditionPatch, CreateSession, ForkRequest, apply_limits

__all__ = ["Store", "StudioSession", "Branch", "Event", "StoredFrame", "Unit", "StudioError", "NotFound",
           "Conflict", "Gone", "Invalid", "Busy", "STATES", "TERMINAL", "conditioning_of"]

STATES = ("running", "paused", "stopped", "done", "expired", "error")
TERMINAL = frozenset({"stopped", "done", "expired", "error"})
CONDITION_FIELDS = ("class_labels", "prompt", "negative_prompt", "guidance_scale")


class StudioError(Exception):
    """A client error, answered as JSON ``{"error": message}`` with :attr:`status`."""

    status = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.headers = message, headers or {}


class NotFound(StudioError):
    status = 404


class Conflict(StudioError):
    status = 409


class Gone(StudioError):
    status = 410


class Invalid(StudioError):
    status = 422


class Busy(StudioError):
    status = 429


def conditioning_of(adapter: Any) -> str:
    """``"class"``, ``"text"`` or ``"none"``: which condition controls a model takes."""
    if getattr(adapter, "num_classes", None) is not None:
        return "class"
    return "text" if str(getattr(adapter, "family", "")).startswith("stable-diffusion") else "none"


@dataclass(frozen=True)
class Event:
    """One server-sent event; ``id`` counts from 1 across the session."""

    id: int
    type: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        return f"id: {self.id}\nevent: {self.type}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n".encode()


@dataclass
class StoredFrame:
    """A kept frame; ``images`` (PIL) is ``None`` once dropped by the kept-images cap."""

    step: int
    nfe: int
    timestep: int
    elapsed: float
    compute: float
    condition_rev: int
    images: list[Any] | None
    inherited: bool = False


class Branch:
    """One trajectory: a library session, its state word, its frames and pending condition edits.

    ``step`` is the number of frames behind its state (the outer steps done, for the vanilla lane the
    checkpoints reached); ``checkpoints`` the NFE count after each frame it will produce."""

    def __init__(self, id: str, kind: str, session: Any, checkpoints: list[int], seed: int, *,
                 parent: str | None = None, at_step: int = 0, image: int | None = None, rev: int = 0) -> None:
        self.id, self.kind, self.session, self.checkpoints, self.seed = id, kind, session, checkpoints, seed
        self.parent, self.at_step, self.image, self.rev = parent, at_step, image, rev
        self.state = "running"
        self.frames: dict[int, StoredFrame] = {}
        self.pending: list[dict[str, Any]] = []  # condition edits not yet seen: {"rev", "applies_from_step", "changes"}
        self.cancel = threading.Event()
        self.in_flight = False
        self.error: str | None = None
        self.reason: str | None = None
        self.seconds_per_nfe: float | None = None  # wall clock, contention included: the ETA's rate
        self._mark: tuple[float, int] | None = None

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
    def num_images(self) -> int:
        return len(self.session.core.x)

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


@dataclass
class Unit:
    """One unit of the worker's work: a branch's next frame, computed on ``work`` (a private fork)."""

    session: "StudioSession"
    branch: Branch
    work: Any
    changes: dict[str, Any]
    cancel: threading.Event
    deadline_at: float | None
    target_nfe: int

    def advance(self) -> Any:
        """Compute the frame (outside the store's lock). Raises like :meth:`Session.step` when
        interrupted; the branch's committed session is untouched either way."""
        if self.changes:
            self.work.set_condition(**self.changes)
        if self.branch.kind == "nested":
            return self.work.step(self.deadline_at, self.cancel)
        frame = None  # the vanilla lane: one NFE per step up to the next nested checkpoint, decoded there
        while self.work.nfe < self.target_nfe:
            frame = self.work.step(self.deadline_at, self.cancel)
        return dataclasses.replace(frame, images=self.work.decode(frame.latents, "pil"))


@dataclass
class StudioSession:
    """One ``POST /v1/sessions``: its branches, its event log (ids = positions + 1) and its
    intervention log (:mod:`.interventions`)."""

    id: str
    request: dict[str, Any]
    checkpoints: list[int]
    seed: int
    created: float  # time.time()
    started: float  # time.perf_counter()
    deadline_at: float | None
    branches: dict[str, Branch] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    ops: list[dict[str, Any]] = field(default_factory=list)
    subscribers: set = field(default_factory=set)
    streams: int = 0
    last_activity: float = 0.0
    forked: int = 0  # branches created by forks (named b1, b2, …)
    rev_count: int = 0
    rr: int = 0
    kept_images: int = 0
    kept: collections.deque = field(default_factory=collections.deque)  # (branch, step) in the order kept
    closed: bool = False

    def emit(self, type: str, data: dict[str, Any]) -> Event:
        event = Event(len(self.events) + 1, type, data)
        self.events.append(event)
        for subscriber in list(self.subscribers):
            subscriber.notify()
        return event

    def record(self, op: str, **fields: Any) -> None:
        self.ops.append({"op": op, **fields, "t": round(time.perf_counter() - self.started, 3)})

    @property
    def terminal(self) -> bool:
        return self.closed or all(b.state in TERMINAL for b in self.branches.values())

    def frame_url(self, branch: str, step: int, image: int) -> str:
        return f"/v1/sessions/{self.id}/branches/{branch}/frames/{step}/{image}.png"


class Store:
    """The live sessions of one server (one model on one device)."""

    def __init__(self, pipe: Any, *, model: str | None = None, dtype: str = "float32", limits: Limits = Limits(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pipe, self.model, self.dtype, self.limits, self.clock = pipe, model, dtype, limits, clock
        self.model_name = model or "embedded:digits"
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # the worker waits on it for work
        self.sessions: dict[str, StudioSession] = {}
        self.closing = False
        self._reserved = 0
        self._rr = 0

    # -- model ------------------------------------------------------------------------------------
    def model_info(self) -> dict[str, Any]:
        a = self.pipe.adapter
        kind = conditioning_of(a)
        return {"model": self.model_name, "family": a.family, "device": str(a.device), "dtype": self.dtype,
                "conditioning": kind, "num_classes": getattr(a, "num_classes", None),
                "class_names": getattr(a, "class_names", None), "default_guidance": a.default_guidance,
                "default_budget": DEFAULT_BUDGET, "inner_sampler": DEFAULT_INNER_SAMPLER,
                "limits": dataclasses.asdict(self.limits)}

    def _within_limits(self, body: Any) -> None:
        try:
            apply_limits(body, self.limits)
        except ValueError as e:
            raise Invalid(str(e)) from None

    def _check_condition(self, num_images: int, condition: dict[str, Any]) -> None:
        """The model's own validation of a condition, cheap (text models: no prompt encoding)."""
        from ..pipelines.adapter import check_guidance
        from ..pipelines.latent import prompt_batch

        a = self.pipe.adapter
        try:
            if conditioning_of(a) == "text":
                if condition.get("class_labels") is not None:
                    raise ValueError(f"this {a.family} model is text-conditional: pass prompt, not class_labels")
                prompt_batch(condition.get("prompt"), condition.get("negative_prompt"), num_images)
                if condition.get("guidance_scale") is not None:
                    check_guidance(condition["guidance_scale"])
            else:
                with torch.inference_mode():
                    a.condition(num_images, **condition)
        except (ValueError, TypeError) as e:
            raise Invalid(str(e)) from None

    # -- lookup -----------------------------------------------------------------------------------
    def get(self, session_id: str, touch: bool = True) -> StudioSession:
        with self.lock:
            s = self.sessions.get(session_id)
            if s is None:
                raise NotFound(f"unknown session {session_id!r} (deleted, expired or never created)")
            if touch:
                s.last_activity = self.clock()
            return s

    def _branch(self, session_id: str, branch_id: str) -> tuple[StudioSession, Branch]:
        s = self.get(session_id)
        b = s.branches.get(branch_id)
        if b is None:
            raise NotFound(f"session {session_id!r} has no branch {branch_id!r} (pruned or never created)")
        return s, b

    # -- sessions ---------------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until the first live session may expire (for 429's Retry-After)."""
        now, idle = self.clock(), self.limits.idle_timeout
        waits = [s.last_activity + idle - now for s in self.sessions.values() if s.streams == 0]
        return max(1, math.ceil(min(waits) if waits else idle))

    def create(self, body: CreateSession) -> StudioSession:
        """Validate, build the library session(s) and register a new studio session (its root
        branch starts running at once)."""
        self._within_limits(body)
        with self.lock:
            if self.closing:
                raise Busy("the server is shutting down", {"Retry-After": "5"})
            if len(self.sessions) + self._reserved >= self.limits.max_sessions:
                raise Busy(f"{self.limits.max_sessions} sessions are live (the server's --max-sessions); "
                           "delete one or wait for one to expire", {"Retry-After": str(self.retry_after())})
            self._reserved += 1
        try:
            root, lane, checkpoints = self._build(body)
            with self.lock:
                now = time.perf_counter()
                s = StudioSession(id=secrets.token_urlsafe(12), request=body.model_dump(), checkpoints=checkpoints,
                                  seed=body.seed, created=time.time(), started=now, last_activity=self.clock(),
                                  deadline_at=None if body.deadline is None else now + body.deadline)
                self._add_branch(s, Branch(ROOT, "nested", root, checkpoints, body.seed))
                if lane is not None:
                    self._add_branch(s, Branch(VANILLA, "vanilla", lane, checkpoints, body.seed))
                self.sessions[s.id] = s
                self.changed.notify_all()
                return s
        finally:
            with self.lock:
                self._reserved -= 1

    def _build(self, body: CreateSession) -> tuple[Any, Any, list[int]]:
        """The library sessions of a request: nested (``NestedPipeline.anytime``) and, with
        ``compare_vanilla``, the vanilla DDIM (η = 1) lane with as many NFEs; same seed, same x_T."""
        try:
            root = self.pipe.anytime(**body.library_kwargs(), generator=torch.Generator().manual_seed(body.seed),
                                     output_type="pil")
        except (ValueError, TypeError) as e:
            raise Invalid(str(e)) from None
        checkpoints = session_checkpoints(root, body.budget)
        if checkpoints[-1] > self.limits.max_nfe or root.num_steps > self.limits.max_outer_steps:
            raise Invalid(f"this layout plans {root.num_steps} outer steps and {checkpoints[-1]} NFEs; the server allows "
                          f"at most {self.limits.max_outer_steps} and {self.limits.max_nfe}")
        lane = None
        if body.compare_vanilla:
            lane = self.pipe.vanilla(**vanilla_kwargs(body.model_dump(), checkpoints[-1]),
                                     generator=torch.Generator().manual_seed(body.seed), output_type="latent")
        return root, lane, checkpoints

    def delete(self, session_id: str) -> None:
        with self.lock:
            s = self.get(session_id, touch=False)
            self._close(s)

    def _close(self, s: StudioSession) -> None:
        s.closed = True
        for b in s.branches.values():
            b.cancel.set()
        self.sessions.pop(s.id, None)
        for subscriber in list(s.subscribers):
            subscriber.notify()

    def expire_idle(self) -> list[str]:
        """Expire sessions idle for ``idle_timeout`` (no request, no open stream); returns their ids."""
        with self.lock:
            now, expired = self.clock(), []
            for s in list(self.sessions.values()):
                if s.streams == 0 and now - s.last_activity > self.limits.idle_timeout:
                    for b in s.branches.values():
                        if b.state not in TERMINAL:
                            self._set_state(s, b, "expired", reason="expired")
                    self._close(s)
                    expired.append(s.id)
            return expired

    def shutdown(self) -> None:
        """Stop accepting work and wake every stream so that it ends."""
        with self.lock:
            self.closing = True
            for s in self.sessions.values():
                for b in s.branches.values():
                    b.cancel.set()
                for subscriber in list(s.subscribers):
                    subscriber.notify()
            self.changed.notify_all()

    # -- branches ---------------------------------------------------------------------------------
    def _add_branch(self, s: StudioSession, b: Branch) -> None:
        s.branches[b.id] = b
        s.emit("status", b.status())

    def _set_state(self, s: StudioSession, b: Branch, state: str, reason: str | None = None) -> None:
        b.state, b.reason = state, reason
        if state != "running":
            b.cancel.set()
            b._mark = None  # the ETA's rate restarts when the branch runs again
        if state in TERMINAL and state != "done":
            s.record("stop", branch=b.id, at_step=b.step, reason=reason or state)
        s.emit("status", b.status())

    def control(self, session_id: str, branch_id: str, action: str) -> dict[str, Any]:
        """``pause``, ``resume`` or ``stop`` a branch; idempotent where the state already matches."""
        with self.lock:
            s, b = self._branch(session_id, branch_id)
            if action == "pause":
                if b.state == "running":
                    s.record("pause", branch=b.id, at_step=b.step)
                    self._set_state(s, b, "paused")
                elif b.state != "paused":
                    raise Conflict(f"branch {b.id} is {b.state}: only a running branch can be paused")
            elif action == "resume":
                if b.state == "paused":
                    s.record("resume", branch=b.id, at_step=b.step)
                    self._set_state(s, b, "running")
                    self.changed.notify_all()
                elif b.state != "running":
                    raise Conflict(f"branch {b.id} is {b.state}: only a paused branch can be resumed "
                                   "(fork it to continue)")
            elif action == "stop":
                if b.state in ("running", "paused"):
                    self._set_state(s, b, "stopped", reason="user")
            else:  # pragma: no cover - routes only pass the three actions
                raise NotFound(f"unknown action {action!r}")
            return b.status()

    def prune(self, session_id: str, branch_id: str) -> None:
        """Delete a branch and its frames (its children live on)."""
        with self.lock:
            s, b = self._branch(session_id, branch_id)
            if b.state not in TERMINAL:
                b.state, b.reason = "stopped", "pruned"
                b.cancel.set()
            s.record("stop", branch=b.id, at_step=b.step, reason="pruned")
            del s.branches[b.id]
            s.kept_images -= sum(len(f.images) for f in b.frames.values() if f.images is not None)
            s.emit("status", {**b.status(), "state": "stopped", "pruned": True})

    def set_condition(self, session_id: str, branch_id: str, patch: ConditionPatch) -> dict[str, Any]:
        """Queue a condition edit; the receipt names the first outer step that sees it (the next
        one, or the one after if a step is being computed now)."""
        self._within_limits(patch)
        with self.lock:
            s, b = self._branch(session_id, branch_id)
            if b.kind != "nested":
                raise Conflict("the vanilla preview lane takes no interventions: it shows what a vanilla sampler shows")
            if b.state in TERMINAL:
                raise Conflict(f"branch {b.id} is {b.state}: fork it to continue with another condition")
            changes = patch.changes()
            condition = dict(b.session.condition)
            for edit in sorted(b.pending, key=lambda p: p["rev"]):
                condition.update(edit["changes"])
            condition.update(changes)
            self._check_condition(b.num_images, condition)
            s.rev_count += 1
            edit = {"rev": s.rev_count, "applies_from_step": b.step + 1 + (1 if b.in_flight else 0), "changes": changes}
            b.pending.append(edit)
            s.record("condition", branch=b.id, **edit)
            s.emit("condition", {"branch": b.id, "rev": edit["rev"], "applies_from_step": edit["applies_from_step"]})
            return {"rev": edit["rev"], "applies_from_step": edit["applies_from_step"]}

    def fork(self, session_id: str, branch_id: str, req: ForkRequest) -> dict[str, Any]:
        """New branches from ``branch_id``'s last completed step, each with its own noise."""
        self._within_limits(req)
        with self.lock:
            s, b = self._branch(session_id, branch_id)
            if b.kind != "nested":
                raise Conflict("the vanilla preview lane cannot be forked")
            if b.finished or b.state == "error":
                raise Conflict(f"branch {b.id} is {'done' if b.finished else b.state}: nothing left to continue")
            n_new = 1 if req.image is not None else req.count
            if len(s.branches) + n_new > self.limits.max_branches:
                raise Conflict(f"a session holds at most {self.limits.max_branches} branches "
                               f"({len(s.branches)} now): prune some first")
            if req.image is not None and req.image >= b.num_images:
                raise Invalid(f"image must lie in [0, {b.num_images - 1}] (branch {b.id} holds {b.num_images} images), "
                              f"got {req.image}")
            names = [f"b{s.forked + j + 1}" for j in range(n_new)]
            seeds = req.seeds or [fork_seed(s.seed, s.forked + j + 1) for j in range(n_new)]
            s.forked += n_new
            indices = None if req.image is None else [req.image] * req.count
            at_step = b.step
            children = []
            for name, seed in zip(names, seeds):
                child = Branch(name, "nested", b.session.fork(torch.Generator().manual_seed(seed), indices),
                               b.checkpoints, seed, parent=b.id, at_step=at_step, image=req.image, rev=b.rev)
                children.append(child)
            s.record("fork", parent=b.id, at_step=at_step, branches=names, seeds=seeds, image=req.image,
                     count=req.count)
            s.emit("fork", {"parent": b.id, "at_step": at_step, "branches": names, "seeds": seeds, "image": req.image,
                            "count": req.count})
            for child in children:
                self._add_branch(s, child)
                source = b.frames.get(at_step)
                if source is not None:  # the child's history starts with the parent's frame it grew from
                    images = None if source.images is None else \
                        list(source.images) if indices is None else [source.images[i] for i in indices]
                    self._keep(s, child, dataclasses.replace(source, images=images, inherited=True))
            self.changed.notify_all()
            return {"branches": names, "at_step": at_step, "seeds": seeds}

    # -- frames -----------------------------------------------------------------------------------
    def _keep(self, s: StudioSession, b: Branch, frame: StoredFrame) -> None:
        """Store a frame, announce it, and drop the oldest kept images beyond the session's cap
        (never a branch's latest frame)."""
        b.frames[frame.step] = frame
        if frame.images is not None:
            s.kept_images += len(frame.images)
            s.kept.append((b.id, frame.step))
        s.emit("frame", frame_event(s, b, frame))
        for _ in range(len(s.kept)):
            if s.kept_images <= self.limits.max_kept_images:
                break
            name, step = s.kept.popleft()
            owner = s.branches.get(name)
            old = owner.frames.get(step) if owner else None
            if old is None or old.images is None:
                continue
            if step == max(owner.frames):
                s.kept.append((name, step))
                continue
            s.kept_images -= len(old.images)
            old.images = None

    # -- the worker's side ------------------------------------------------------------------------
    def next_unit(self) -> Unit | None:
        """The next branch to advance, round-robin over sessions and, within a session, over its
        running branches (call with the lock held)."""
        sessions = list(self.sessions.values())
        if self.closing or not sessions:
            return None
        for i in range(len(sessions)):
            s = sessions[(self._rr + i) % len(sessions)]
            branches = list(s.branches.values())
            for j in range(len(branches)):
                b = branches[(s.rr + j) % len(branches)]
                if b.state != "running" or b.in_flight:
                    continue
                if b.finished:  # e.g. a fork of a branch whose last step completed meanwhile
                    self._set_state(s, b, "done")
                    continue
                self._rr, s.rr = (self._rr + i + 1) % len(sessions), (s.rr + j + 1) % len(branches)
                changes, _ = due_changes(b.pending, b.step + 1)
                b.in_flight, b.cancel = True, threading.Event()
                if b._mark is None:
                    b._mark = (time.perf_counter(), b.nfe)
                return Unit(s, b, b.session.fork(), changes, b.cancel, s.deadline_at, b.checkpoints[b.step])
        return None

    def commit(self, unit: Unit, frame: Any) -> bool:
        """Keep a computed frame if its branch is still running; returns whether it was kept."""
        with self.lock:
            s, b = unit.session, unit.branch
            b.in_flight = False
            if s.closed or s.branches.get(b.id) is not b or b.state != "running" or unit.cancel.is_set():
                return False
            applied = [p["rev"] for p in b.pending if p["applies_from_step"] <= b.step + 1]
            _, b.pending = due_changes(b.pending, b.step + 1)
            b.rev = max([b.rev, *applied])
            b.session = unit.work
            now = time.perf_counter()
            rate = (now - b._mark[0]) / max(1, b.nfe - b._mark[1])
            b.seconds_per_nfe = rate if b.seconds_per_nfe is None else 0.5 * b.seconds_per_nfe + 0.5 * rate
            b._mark = (now, b.nfe)
            self._keep(s, b, StoredFrame(step=b.step, nfe=frame.nfe, timestep=frame.timestep,
                                         elapsed=round(now - s.started, 3), compute=round(frame.elapsed, 3),
                                         condition_rev=b.rev, images=list(frame.images)))
            if b.finished:
                self._set_state(s, b, "done")
            return True

    def fail(self, unit: Unit, error: BaseException) -> None:
        """A unit that raised: a missed deadline stops the branch, a cancelled step changes nothing
        (its branch was paused, stopped or pruned), anything else marks the branch ``error``."""
        with self.lock:
            s, b = unit.session, unit.branch
            b.in_flight = False
            b._mark = None
            if s.closed or s.branches.get(b.id) is not b or b.state != "running":
                return
            if isinstance(error, DeadlineExceeded):
                self._set_state(s, b, "stopped", reason="deadline")
            elif not isinstance(error, StepCancelled):
                b.error = f"{type(error).__name__}: {error}"
                self._set_state(s, b, "error", reason="error")


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


def session_checkpoints(session: Any, budget: int | None) -> list[int]:
    """The NFE counts after each frame a session will show: its checkpoints within ``budget``."""
    all_checkpoints = session.checkpoints()
    checkpoints = [c for c in all_checkpoints if budget is None or c <= budget]
    if not checkpoints:
        raise Invalid(f"budget {budget} is smaller than the first outer step ({all_checkpoints[0]} NFEs)")
    return checkpoints


def vanilla_kwargs(request: dict[str, Any], steps: int) -> dict[str, Any]:
    """``NestedPipeline.vanilla`` arguments of the comparison lane: DDIM (η = 1) with ``steps`` NFEs."""
    return dict(num_inference_steps=steps, sampler="ddim", eta=1.0, num_images=request["num_images"],
                height=request.get("height"), width=request.get("width"),
                **{k: request[k] for k in CONDITION_FIELDS})


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
