"""Sessions: create, read (snapshot, intervention log, event stream, an edit's images) and delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from ..build import edit_of
from ..deps import body_schema, create_body, get_session, get_studio
from ..errors import Busy, NotFound, responses
from ..replies import InterventionLog, SessionCreated, Snapshot
from ..service import Studio
from ..sse import event_stream
from ..state import StudioSession
from ..uploads import ID_PATTERN
from .. import views

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

_SESSION = "$response.body#/session_id"
_CREATED_LINKS = {
    "GetSession": {"operationId": "getSession", "parameters": {"session_id": _SESSION}},
    "GetLog": {"operationId": "getLog", "parameters": {"session_id": _SESSION}},
    "DeleteSession": {"operationId": "deleteSession", "parameters": {"session_id": _SESSION}},
    **{f"{verb.capitalize()}Root": {"operationId": f"{verb}Branch", "parameters": {
        "session_id": _SESSION, "branch_id": "$response.body#/branches/0"}}
       for verb in ("pause", "resume", "stop", "fork", "condition", "edit", "prune")},
}
_FIRST = "$response.body#/branches/0"
_SNAPSHOT_LINKS = {  # a snapshot names the frames that exist
    "GetFirstFrame": {"operationId": "getFrame", "parameters": {
        "session_id": "$response.body#/session_id", "branch_id": f"{_FIRST}/branch",
        "step": f"{_FIRST}/frames/0/step", "image": 0}},
    "GetAnimation": {"operationId": "getAnimation", "parameters": {
        "session_id": "$response.body#/session_id", "branch_id": f"{_FIRST}/branch", "image": 0}},
}
#: one server-sent event (OpenAPI 3.1: the event stream's ``schema`` describes each event)
_EVENT = {"type": "object", "properties": {
    "id": {"type": "string", "pattern": "^[0-9]+$"}, "event": {"enum": ["status", "frame", "condition", "fork"]},
    "data": {"type": "string", "contentMediaType": "application/json"}, "retry": {"type": "integer"}}}


@router.post("", status_code=201, operation_id="createSession", response_model=SessionCreated,
             openapi_extra=body_schema("CreateSession"),
             responses={**responses(409, 413, 415, 422, 429), 201: {"links": _CREATED_LINKS, "headers": {
                 "Location": {"description": "the session's snapshot", "schema": {"type": "string"}}}}})
def create_session(response: Response, body: Any = Depends(create_body),
                   studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Start a nested-diffusion session (its root branch ``b0`` runs at once), on the least-loaded device: a
    generation, or with ``image`` (an upload) an edit — a 409 when an image it names is not (or no longer)
    uploaded, or its size does not fit."""
    s = studio.registry.create(body)
    response.headers["Location"] = f"/v1/sessions/{s.id}"
    return {"session_id": s.id, "branches": list(s.branches), "checkpoints": s.checkpoints,
            "events_url": f"/v1/sessions/{s.id}/events", "snapshot_url": f"/v1/sessions/{s.id}",
            "log_url": f"/v1/sessions/{s.id}/log", "edit": views.edit_view(s, edit_of(s.request))}


@router.get("/{session_id}", operation_id="getSession", response_model=Snapshot,
            responses={**responses(404, 422), 200: {"links": _SNAPSHOT_LINKS}})
def snapshot(session: StudioSession = Depends(get_session), studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Everything about a session: branches, states, conditions, every kept frame."""
    return views.snapshot(studio, session)


@router.delete("/{session_id}", status_code=204, operation_id="deleteSession", response_class=Response,
               responses=responses(404, 422))
def delete_session(session: StudioSession = Depends(get_session), studio: Studio = Depends(get_studio)) -> Response:
    """Delete a session and everything it holds (its steps in flight are cancelled)."""
    studio.registry.delete(session.id)
    return Response(status_code=204)


@router.get("/{session_id}/log", operation_id="getLog", response_model=InterventionLog, responses=responses(404, 422))
def intervention_log(session: StudioSession = Depends(get_session), studio: Studio = Depends(get_studio)
                     ) -> dict[str, Any]:
    """The intervention log: ``nested-diffusion generate --replay log.json`` reproduces the frames."""
    return views.log(studio, session)


@router.get("/{session_id}/images/{image_id}.png", operation_id="getSessionImage", response_class=Response,
            responses={**responses(404, 422), 200: {"content": {"image/png": {"schema": {
                "type": "string", "format": "binary"}}}, "description": "the image"}})
def session_image(image_id: str = Path(..., pattern=ID_PATTERN, description="an id the snapshot's edit names"),
                  session: StudioSession = Depends(get_session), studio: Studio = Depends(get_studio)) -> Response:
    """An edit's input or mask as the session holds it (prepared for the model: its mode and size)."""
    with studio.lock:
        image = session.images.get(image_id)
    if image is None:
        raise NotFound(f"session {session.id!r} holds no image {image_id!r} (its edit's input and masks only)")
    return Response(image.png(), media_type="image/png", headers={"Cache-Control": "private, max-age=86400, immutable"})


@router.get("/{session_id}/events", operation_id="getEvents", response_class=StreamingResponse,
            responses={**responses(404, 422, 429), 200: {"content": {"text/event-stream": {"schema": _EVENT}},
                                                         "description": "the event stream"}})
async def events(after: int | None = Query(None, ge=0, description="resume after this event id"),
                 last_event_id: str | None = Header(None, pattern=r"^[0-9]+$",
                                                    description="resume after this event id (wins over after)"),
                 session: StudioSession = Depends(get_session), studio: Studio = Depends(get_studio)
                 ) -> StreamingResponse:
    """Server-Sent Events (``frame``, ``condition``, ``fork``, ``status``), numbered by ``id:``,
    resumable with ``Last-Event-ID`` or ``?after=N``; closed when every branch is terminal (or after
    the server's ``max_stream_seconds``: resume it)."""
    start = int(last_event_id) if last_event_id is not None else (after or 0)
    limits = studio.limits
    with studio.lock:
        if session.streams >= limits.max_streams:
            raise Busy(f"this session already has {limits.max_streams} open event streams; close one",
                       {"Retry-After": "5"})
    return StreamingResponse(event_stream(studio, session, start, max_seconds=limits.max_stream_seconds),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
