"""FastAPI dependencies shared by the routers: the studio, the session and branch a path names, and
request bodies validated by this server's contract (:mod:`.schemas`)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Path, Request

from .service import Studio
from .state import Branch, StudioSession

__all__ = ["get_studio", "get_session", "get_branch", "create_body", "patch_body", "edit_body", "fork_body", "body_schema",
           "no_unknown_query", "declared", "declared_query"]


def declared(dependant: Any, kind: str) -> set[str]:
    """The names of one kind of parameter (``path``, ``query``, ``header``, ``cookie``, ``body``) a
    route's dependant declares, its sub-dependencies' included."""
    if dependant is None:
        return set()
    names = {p.alias for p in getattr(dependant, f"{kind}_params")}
    for sub in dependant.dependencies:
        names |= declared(sub, kind)
    return names


def declared_query(route: Any) -> set[str]:
    return declared(getattr(route, "dependant", None), "query")


def no_unknown_query(request: Request) -> None:
    """A query parameter the route does not declare is refused (422), as unknown body fields are: a
    mistyped ``?afer=3`` must not be ignored, nor a ``?action=stop`` mistaken for an intervention."""
    from .errors import Invalid

    route = request.scope.get("route")
    unknown = sorted(set(request.query_params) - declared_query(route))
    if unknown:
        known = sorted(declared_query(route))
        raise Invalid(f"unknown query parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                      f"(this route takes {', '.join(known) if known else 'none'})")


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


async def edit_body(request: Request) -> Any:
    return await _body(request, "EditPatch")


async def fork_body(request: Request) -> Any:
    return await _body(request, "ForkRequest")


def body_schema(name: str) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is contract model ``name`` (its schema is this server's)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{name}"}}}}}
