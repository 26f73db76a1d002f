"""One router per resource: the server (``health``), sessions (with their log and event stream),
branches (interventions) and frames (PNG and GIF); ``page`` serves the browser page."""

from . import branches, frames, health, page, sessions

__all__ = ["health", "sessions", "branches", "frames", "page", "ROUTERS"]

ROUTERS = (health.router, sessions.router, branches.router, frames.router, page.router)
