"""The lifecycle of sessions: creation (caps, placement on the least-loaded device, an edit's prepared
images, the library sessions), lookup, deletion, idle expiry, shutdown and the ``Retry-After`` a full
server answers."""

from __future__ import annotations

import math
import secrets
import threading
import time
from typing import Any, Callable

from .build import build_lane, build_root, condition_of, edit_of, nfe_cap, session_checkpoints
from .conditions import check_condition
from .editing import edit_size, kept_pixels, prepare_input, prepare_mask, route
from .errors import Busy, Conflict, Invalid, NotFound
from .interventions import ROOT, VANILLA
from .limits import Limits
from .retention import FrameRetention
from .state import Branch, StudioSession

__all__ = ["Registry"]


class Registry:
    """The live sessions of one server, each on one of its devices (``pipes``, one pipeline each)."""

    def __init__(self, pipes: list[Any], limits: Limits, lock: threading.RLock, changed: threading.Condition,
                 clock: Callable[[], float] = time.monotonic, node: str | None = None, uploads: Any = None) -> None:
        self.pipes, self.limits, self.lock, self.changed, self.clock = pipes, limits, lock, changed, clock
        self.uploads = uploads  # the server's uploaded images (:class:`~.uploads.Uploads`), for edits
        self.node = node  # the prefix of this server's session ids (a proxy routes on it)
        self.sessions: dict[str, StudioSession] = {}
        self.closing = False
        self._reserved = 0

    # -- lookup -----------------------------------------------------------------------------------------
    def get(self, session_id: str, touch: bool = True) -> StudioSession:
        with self.lock:
            s = self.sessions.get(session_id)
            if s is None:
                raise NotFound(f"unknown session {session_id!r} (deleted, expired or never created)")
            if touch:
                s.last_activity = self.clock()
            return s

    def branch(self, s: StudioSession, branch_id: str) -> Branch:
        b = s.branches.get(branch_id)
        if b is None:
            raise NotFound(f"session {s.id!r} has no branch {branch_id!r} (pruned or never created)")
        return b

    def count(self, device: int | None = None) -> int:
        with self.lock:
            return sum(device is None or s.device == device for s in self.sessions.values())

    # -- placement --------------------------------------------------------------------------------------
    def loads(self) -> list[int]:
        """Each device's outstanding work: image-NFEs still to compute by its live branches."""
        out = [0] * len(self.pipes)
        for s in self.sessions.values():
            out[s.device] += s.remaining_work
        return out

    def place(self) -> int:
        """The device for a new session: the least loaded (then the one with fewer sessions, then the first)."""
        loads = self.loads()
        counts = [0] * len(self.pipes)
        for s in self.sessions.values():
            counts[s.device] += 1
        return min(range(len(self.pipes)), key=lambda d: (loads[d], counts[d], d))

    # -- sessions ---------------------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until the first live session may expire (for 429's Retry-After)."""
        now, idle = self.clock(), self.limits.idle_timeout
        waits = [s.last_activity + idle - now for s in self.sessions.values() if s.streams == 0]
        return max(1, math.ceil(min(waits) if waits else idle))

    def create(self, body: Any) -> StudioSession:
        """Check, place, build the library session(s) and register a new studio session (its root
        branch starts running at once)."""
        request = body.model_dump()
        with self.lock:
            if self.closing:
                raise Busy("the server is shutting down", {"Retry-After": "5"})
            if len(self.sessions) + self._reserved >= self.limits.max_sessions:
                raise Busy(f"{self.limits.max_sessions} sessions are live (the server's --max-sessions); "
                           "delete one or wait for one to expire", {"Retry-After": str(self.retry_after())})
            self._reserved += 1
            device = self.place()
        try:
            pipe = self.pipes[device]
            images: dict[str, Any] = {}
            mask_sizes: list[tuple[int, int]] = []
            if request.get("image") is not None:
                request, images, mask_sizes = self.prepare_edit(pipe.adapter, request)
            cap = nfe_cap(request, self.limits.max_nfe)
            try:
                check_condition(pipe.adapter, request["num_images"], condition_of(request))
                root = build_root(pipe, request, images)
                checkpoints = session_checkpoints(root, cap)
            except (ValueError, TypeError) as e:
                raise Invalid(str(e)) from None
            lane = build_lane(pipe, request, checkpoints[-1], images) if request["compare_vanilla"] else None
            with self.lock:
                now = time.perf_counter()
                sid = secrets.token_urlsafe(12)
                s = StudioSession(id=f"{self.node}-{sid}" if self.node else sid, request=request,
                                  checkpoints=checkpoints, seed=request["seed"], created=time.time(), started=now,
                                  last_activity=self.clock(), device=device, nfe_cap=cap, images=images,
                                  mask_sizes=mask_sizes,
                                  deadline_at=None if request["deadline"] is None else now + request["deadline"])
                s.retention = FrameRetention(s, self.limits.max_kept_images)
                s.add_branch(Branch(s, ROOT, "nested", root, checkpoints, request["seed"], edit=edit_of(request)))
                if lane is not None:
                    s.add_branch(Branch(s, VANILLA, "vanilla", lane, checkpoints, request["seed"]))
                self.sessions[s.id] = s
                self.changed.notify_all()
                return s
        finally:
            with self.lock:
                self._reserved -= 1

    def prepare_edit(self, adapter: Any, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list]:
        """An edit request with its uploads prepared for the model (:mod:`.editing`): the request naming the
        prepared images and the edit's size, the images by id, and the sizes a later mask may have. A missing
        upload, a size outside the caps or a mask of another size is a 409 (valid, not for these images)."""
        def upload(name: str) -> Any:
            found = self.uploads.get(request[name])
            if found is None:
                raise Conflict(f"{name}: no uploaded image {request[name]!r} (POST /v1/images first; the server keeps "
                               f"its {self.limits.max_uploads} latest uploads)")
            return found

        source = upload("image")
        mask = upload("mask_image") if request.get("mask_image") is not None else None
        try:
            height, width = edit_size(adapter.size_rule(), source.size, request.get("height"), request.get("width"),
                                      self.limits.max_side)
            image = prepare_input(adapter, source, height, width)
            images = {image.id: image}
            sizes = [source.size, (width, height)]
            if mask is not None:
                mask = prepare_mask(mask, sizes, height, width)
                if route(adapter, request) == "ddrm":
                    kept_pixels(mask.image, adapter.channels)
                images[mask.id] = mask
        except ValueError as e:
            raise Conflict(str(e)) from None
        return ({**request, "image": image.id, "mask_image": None if mask is None else mask.id, "height": height,
                 "width": width}, images, sizes)

    def delete(self, session_id: str) -> None:
        with self.lock:
            s = self.get(session_id, touch=False)
            self._close(s)

    def _close(self, s: StudioSession) -> None:
        self.sessions.pop(s.id, None)
        s.close()

    def expire_idle(self) -> list[str]:
        """Expire sessions idle for ``idle_timeout`` (no request, no open stream); returns their ids."""
        with self.lock:
            now, expired = self.clock(), []
            for s in list(self.sessions.values()):
                if s.streams == 0 and now - s.last_activity > self.limits.idle_timeout:
                    for b in s.branches.values():
                        b.stop("expired")
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
                s.log.wake()
            self.changed.notify_all()
