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
from typing import AsyncIterator

from .sessions import Event, Store, StudioSession

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


async def event_stream(store: Store, session: StudioSession, after: int, *, keepalive: float = 15.0,
                       backlog: int = 64) -> AsyncIterator[bytes]:
    """The SSE byte stream of ``session`` from event id ``after`` (exclusive)."""
    wakeup = _Wakeup(asyncio.get_running_loop())
    with store.lock:
        session.subscribers.add(wakeup)
        session.streams += 1
    try:
        yield b"retry: 1000\n\n"
        cursor = after
        while True:
            with store.lock:
                wakeup.event.clear()
                fresh = session.events[cursor:]
                finished = session.terminal or store.closing
                session.last_activity = store.clock()
            if fresh:
                cursor = fresh[-1].id
                yield b"".join(e.encode() for e in coalesce(fresh, backlog))
            if finished:
                return
            try:
                await asyncio.wait_for(wakeup.event.wait(), keepalive)
            except asyncio.TimeoutError:
                yield b": keep-alive\n\n"
    finally:
        with store.lock:
            session.subscribers.discard(wakeup)
            session.streams -= 1
            session.last_activity = store.clock()
