"""The anytime studio: ``nested-diffusion serve`` — watch, stop, steer and branch generations live.

``app`` (the security middleware, JSON errors) → ``routers`` (one per resource) → ``deps`` →
``service.Studio``: ``registry`` (session lifecycle, placement on devices), ``controls`` (the
interventions), ``schemas`` (the request contract), ``state`` (branches, the event log),
``retention`` (kept frames), ``worker`` + ``scheduler`` + ``batching`` (one worker per device,
packing the network calls of concurrent branches). ``sse`` streams events, ``interventions`` defines
the log that ``replay`` turns back into frames (both via ``build``), ``static/`` is the page.
Only :func:`replay` is imported eagerly-light; the server needs ``fastapi`` and ``uvicorn``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "replay", "Limits"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app
        return create_app
    if name == "replay":
        from .replay import replay
        return replay
    if name == "Limits":
        from .limits import Limits
        return Limits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
