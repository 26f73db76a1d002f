"""FastAPI dependencies shared by the routers: the studio, the session and branch a path names, and
request bodies validated by this server's contract (:mod:`.schemas`)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Path, Request

from .service import Studio
from .state import Branch, StudioSession

__all__ = ["get_studio", "get_session", "get_branch", "create_body", "patch_body", "fork_body", "body_schema"]


def get_studio(request: Request) -> Studio:
    return request.app.state.studio


def get_session(session_id: str = Path(..., description="the id `POST /v1/sessions` answered"),
                studio: Studio = Depends(get_studio)) -> StudioSession:
    """The session a path names (404 if deleted, expired or never created); touching it keeps it alive."""
    return studio.registry.get(session_id)


def get_branch(branch_id: str = Path(..., description="`b0`, a fork's `b1`, `b2`, … or the vanilla lane `v0`"),
               session: StudioSession = Depends(get_session), studio: Studio = Depends(get_studio)) -> Branch:
    with studio.lock:
        return studio.registry.branch(session, branch_id)


async def _body(request: Request, name: str) -> Any:
    studio: Studio = request.app.state.studio
    return studio.contract.parse(getattr(studio.contract, name), await request.body(),
                                 request.headers.get("content-type"))


async def create_body(request: Request) -> Any:
    return await _body(request, "CreateSession")


async def patch_body(request: Request) -> Any:
    return await _body(request, "ConditionPatch")


async def fork_body(request: Request) -> Any:
    return await _body(request, "ForkRequest")


def body_schema(name: str) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is contract model ``name`` (its schema is this server's)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{name}"}}}}}
