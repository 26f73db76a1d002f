"""``GET /v1/health``: the server, its devices and the model's condition controls."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from ..deps import get_studio
from ..errors import responses
from ..replies import Health
from ..service import Studio

router = APIRouter(prefix="/v1", tags=["server"])


@router.get("/health", operation_id="health", response_model=Health, responses=responses())
def health(studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Server status, its devices and sessions, and the model's condition controls."""
    from ... import __version__

    return {"status": "ok", **studio.info(), "sessions": studio.registry.count(),
            "max_sessions": studio.limits.max_sessions, "version": __version__}
