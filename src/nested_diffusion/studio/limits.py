"""The studio's caps: what one client may ask of a shared local server (all checked before any work)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """Caps on sessions, request bodies, uploads and the work and memory one session may claim."""

    #: live sessions (a session lives until DELETE or ``idle_timeout`` without a request or stream)
    max_sessions: int = 8
    #: seconds without any request or open event stream before a session expires
    idle_timeout: float = 600.0
    #: JSON request bodies, bytes (413 beyond); image uploads have their own cap below
    max_body_bytes: int = 64 * 1024
    #: an image upload (``POST /v1/images``), bytes (413 beyond)
    max_upload_bytes: int = 16 * 1024 * 1024
    #: an uploaded image's width × height, read from its header before anything is decoded (413 beyond)
    max_upload_pixels: int = 4096 * 4096
    #: uploaded images kept for sessions to use, and their pixels in all (the least recently used are dropped
    #: first, never the newest; a session keeps its own copy of what it uses)
    max_uploads: int = 16
    max_upload_store_pixels: int = 4 * 4096 * 4096
    #: images in one branch (num_images, and fork variations)
    max_images: int = 16
    #: NFEs one branch may plan (budget and outer × inner)
    max_nfe: int = 1000
    #: outer steps (frames) per branch
    max_outer_steps: int = 100
    #: characters in a prompt or negative prompt
    max_prompt_chars: int = 1000
    #: live branches in a session (the vanilla lane included)
    max_branches: int = 16
    #: decoded images kept per session; beyond it the oldest frames (never a branch's latest) are dropped
    max_kept_images: int = 2048
    #: image height and width, pixels each (rounded down to the model's size multiple)
    max_side: int = 1536
    #: a session's deadline, seconds
    max_deadline: float = 24 * 3600.0
    #: concurrent event streams per session
    max_streams: int = 8
    #: seconds an event stream stays open before the server closes it (the client resumes with
    #: Last-Event-ID, as SSE clients do; proxies drop very long connections anyway)
    max_stream_seconds: float = 3600.0
