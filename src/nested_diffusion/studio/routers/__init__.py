"""One router per resource: the server (``health``), uploaded images (``images``), sessions (with their
log, event stream and edit images), branches (interventions) and frames (PNG and GIF); ``page`` serves
the browser page."""

from . import branches, frames, health, images, page, sessions

__all__ = ["health", "images", "sessions", "branches", "frames", "page", "ROUTERS"]

ROUTERS = (health.router, images.router, sessions.router, branches.router, frames.router, page.router)
