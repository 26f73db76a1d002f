"""One worker thread per device advances the device's live sessions one frame at a time.

*Unbatched*, the worker runs one unit (one branch's next frame) at a time, round-robin: every frame
equals the library's bit for bit. *Batched* (the default, :mod:`.batching`), every runnable branch of
the device has its next step in flight at once, and each tick packs their pending network calls into
one call per compatible group; a branch whose step completes is admitted again at the next tick
(step-level continuous batching). Either way interventions land at step boundaries, Stop, Pause and
Prune cancel a step within one network call, and a cancelled step leaves no trace — not even in the
random generator — so a paused branch resumes with exactly the numbers it would have had.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..session import StepInterrupted
from .batching import Batcher
from .scheduler import Unit, commit, fail, next_units

__all__ = ["Worker"]

log = logging.getLogger("nested_diffusion.studio")


class Worker:
    """Drives device ``device`` of a :class:`~.service.Studio`; :meth:`run_once` advances every branch
    it admits by one frame (tests call it directly)."""

    def __init__(self, studio: Any, device: int, *, batching: bool = True, max_rows: int = 64,
                 max_units: int = 128, expiry_interval: float = 1.0) -> None:
        self.studio, self.device, self.batching = studio, device, batching
        self.max_units, self.expiry_interval = max_units, expiry_interval
        self.batcher = Batcher(studio.pipes[device].adapter, max_rows)
        self._start = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- units --------------------------------------------------------------------------------------------
    def admit(self, limit: int | None) -> list[Unit]:
        with self.studio.lock:
            if self.studio.registry.closing:
                return []
            units, self._start = next_units(list(self.studio.registry.sessions.values()), self.device, self._start,
                                            limit)
            return units

    def settle(self, unit: Unit, frame: Any = None, error: BaseException | None = None) -> None:
        if error is not None and not isinstance(error, StepInterrupted):
            log.error("branch %s of session %s failed", unit.branch.id, unit.session.id, exc_info=error)
        with self.studio.lock:
            if error is None:
                commit(unit, frame)
            else:
                fail(unit, error)
            self.studio.changed.notify_all()

    def _run(self, unit: Unit, network: Any = None) -> None:
        try:
            frame = unit.advance(network)
        except Exception as e:  # the branch reports it; the server goes on
            self.settle(unit, error=e)
        else:
            self.settle(unit, frame)

    def launch(self, unit: Unit) -> None:
        """Start a unit's step in a thread of its own, its network calls going through the batcher."""
        self.batcher.enter()

        def body() -> None:
            try:
                self._run(unit, self.batcher.stand_in(unit.order, unit.cancel))
            finally:
                self.batcher.leave()
        threading.Thread(target=body, name=f"studio-step-{unit.branch.id}", daemon=True).start()

    def _in_flight(self) -> int:
        with self.batcher.lock:
            return self.batcher.active + len(self.batcher.queue)

    def tick(self, timeout: float | None) -> bool:
        """Wait until every step in flight waits on a call or is done, then answer the calls; ``False``
        when nothing is in flight any more."""
        with self.batcher.lock:
            self.batcher.lock.wait_for(self.batcher.settled, timeout)
            if self.batcher.idle():
                return False
        self.batcher.tick()
        return True

    def run_once(self) -> bool:
        """Unbatched: advance one branch by one frame. Batched: advance every runnable branch of this
        device by one frame, their network calls packed. ``False`` when no branch is running."""
        if not self.batching:
            units = self.admit(1)
            if units:
                self._run(units[0])
            return bool(units)
        units = self.admit(self.max_units)
        for unit in units:
            self.launch(unit)
        while self.tick(None):
            pass
        return bool(units)

    # -- the thread ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"nested-diffusion-studio-worker-{self.device}",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self.studio.lock:
            self.studio.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _runnable(self) -> bool:
        return any(b.runnable for s in self.studio.registry.sessions.values() if s.device == self.device
                   for b in s.branches.values())

    def _wait_for_work(self) -> None:
        with self.studio.lock:  # checked and waited under one lock: no wake-up is lost
            if not self._stop.is_set() and not self._runnable():
                self.studio.changed.wait(self.expiry_interval)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.studio.registry.expire_idle()
            if not self.batching:
                if not self.run_once():
                    self._wait_for_work()
                continue
            room = self.max_units - self._in_flight()
            for unit in self.admit(room) if room > 0 else []:
                self.launch(unit)
            if not self.tick(self.expiry_interval):
                self._wait_for_work()
        while self.tick(self.expiry_interval):  # let the steps in flight end (they were cancelled)
            pass
