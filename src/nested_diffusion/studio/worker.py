"""The scheduler: one thread per device advances every live session one frame at a time, round-robin.

Each unit is one outer step of one branch (for the vanilla lane: its steps up to the next nested
checkpoint), so no session starves and every intervention lands at a step boundary. A unit runs on a
private fork of the branch's session and is committed only if the branch is still running; Stop,
Pause and Prune cancel it within one network call (``Session.step(cancel=…)``), and a cancelled step
leaves no trace — not even in the random generator — so a paused branch resumes with exactly the
numbers it would have had.

Sibling branches are never batched into one network call: a different batch size changes the
floating-point results of the network, and the studio promises frames equal to the library's.
"""

from __future__ import annotations

import logging
import threading

from ..session import StepInterrupted
from .sessions import Store

__all__ = ["Worker"]

log = logging.getLogger("nested_diffusion.studio")


class Worker:
    """Drives a :class:`~.sessions.Store`; :meth:`run_once` is one unit (tests call it directly)."""

    def __init__(self, store: Store, expiry_interval: float = 1.0) -> None:
        self.store = store
        self.expiry_interval = expiry_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """Advance one branch by one frame; ``False`` when no branch is running."""
        with self.store.lock:
            unit = self.store.next_unit()
        if unit is None:
            return False
        self._run(unit)
        return True

    def _run(self, unit) -> None:
        try:
            frame = unit.advance()
        except Exception as e:  # the branch reports it; the server goes on
            if not isinstance(e, StepInterrupted):
                log.exception("branch %s of session %s failed", unit.branch.id, unit.session.id)
            self.store.fail(unit, e)
        else:
            self.store.commit(unit, frame)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="nested-diffusion-studio-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.store.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.store.expire_idle()
            with self.store.lock:
                unit = self.store.next_unit()
                if unit is None:
                    self.store.changed.wait(self.expiry_interval)
                    continue
            self._run(unit)
