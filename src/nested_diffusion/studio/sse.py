"""Server-Sent Events for a session: resumable, never blocking the worker.

A stream is a cursor into the session's event log (ids count from 1): on each wake-up it sends every
event after the cursor. The worker only appends to the log and wakes the streams
(``loop.call_soon_threadsafe``), so a slow client costs it nothing; a client that falls more than
``backlog`` events behind gets its stale frames coalesced — only the newest frame of each branch,
every ``status``/``condition``/``fork`` event kept — and the snapshot (``GET /v1/sessions/{id}``)
always has every frame. The stream ends when every branch is terminal (or the session is deleted,
expires, or the server stops); ``Last-Event-ID`` / ``?after=N`` resume it.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import time

from .state import Event, StudioSession

__all__ = ["event_stream", "coalesce"]


class _Wakeup:
    """Wakes one stream's coroutine from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.event = loop, asyncio.Event()

    def notify(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop is closed: the stream is gone
            pass


def coalesce(events: list[Event], backlog: int) -> list[Event]:
    """``events`` unchanged up to ``backlog`` of them; beyond, every frame event that a later frame
    of the same branch supersedes is dropped (the others are kept in order)."""
    if len(events) <= backlog:
        return events
    latest = {}
    for e in events:
        if e.type == "frame":
            latest[e.data["branch"]] = e.id
    return [e for e in events if e.type != "frame" or latest[e.data["branch"]] == e.id]


async def event_stream(studio: Any, session: StudioSession, after: int, *, keepalive: float = 15.0,
                       backlog: int = 64, max_seconds: float | None = None) -> AsyncIterator[bytes]:
    """The SSE byte stream of ``session`` from event id ``after`` (exclusive); it closes after
    ``max_seconds`` (the client resumes with ``Last-Event-ID``)."""
    wakeup = _Wakeup(asyncio.get_running_loop())
    registry = studio.registry
    end = None if max_seconds is None else time.monotonic() + max_seconds
    with studio.lock:
        session.log.subscribers.add(wakeup)
        session.streams += 1
    try:
        yield b"retry: 1000\n\n"
        cursor = after
        while True:
            with studio.lock:
                wakeup.event.clear()
                fresh = session.log.after(cursor)
                finished = session.terminal or registry.closing
                session.last_activity = registry.clock()
            if fresh:
                cursor = fresh[-1].id
                yield b"".join(e.encode() for e in coalesce(fresh, backlog))
            left = None if end is None else end - time.monotonic()
            if finished or (left is not None and left <= 0):
                return
            try:
                await asyncio.wait_for(wakeup.event.wait(), keepalive if left is None else min(keepalive, left))
            except asyncio.TimeoutError:
                yield b": keep-alive\n\n"
    finally:
        with studio.lock:
            session.log.subscribers.discard(wakeup)
            session.streams -= 1
            session.last_activity = registry.clock()
