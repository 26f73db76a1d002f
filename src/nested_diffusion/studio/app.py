"""The studio's HTTP application: the ``/v1`` API, the event stream and the page at ``/``.

Routes only translate HTTP to :class:`~.sessions.Store` calls; the sampling is the library's
(:meth:`NestedPipeline.anytime` sessions advanced by :class:`~.worker.Worker`). Every error is JSON
``{"error": ...}`` with a 4xx status; an unexpected failure is a JSON 500 without a traceback and
the server goes on.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Iterable

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .frames import gif_bytes, png_bytes
from .limits import Limits
from .schemas import ConditionPatch, CreateSession, ForkRequest, format_errors
from .security import SecurityMiddleware
from .sessions import Busy, Invalid, Store, StudioError
from . import views
from .sse import event_stream
from .worker import Worker

__all__ = ["create_app", "STATIC"]

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger("nested_diffusion.studio")


def create_app(pipe: Any, *, model: str | None = None, dtype: str = "float32", limits: Limits = Limits(),
               host: str = "127.0.0.1", token: str | None = None, allowed_hosts: Iterable[str] = (),
               start_worker: bool = True) -> FastAPI:
    """The studio for a loaded :class:`~nested_diffusion.NestedPipeline` (``model``: the name it was
    loaded from, ``None`` for the embedded model). ``start_worker=False`` leaves scheduling to the
    caller (``app.state.worker.run_once()``), for deterministic tests."""
    from .. import __version__

    store = Store(pipe, model=model, dtype=dtype, limits=limits)
    worker = Worker(store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_worker:
            worker.start()
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(title="nested-diffusion studio", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", lifespan=lifespan,
                  description="Watch, stop, steer and branch anytime generations (nested diffusion).")
    app.state.store, app.state.worker = store, worker
    app.add_middleware(SecurityMiddleware, bind_host=host, token=token, allowed_hosts=allowed_hosts,
                       max_body_bytes=limits.max_body_bytes)

    # -- errors: always JSON ------------------------------------------------------------------------
    @app.exception_handler(StudioError)
    async def studio_error(request: Request, e: StudioError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": format_errors(e.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = e.detail if isinstance(e.detail, str) else "error"
        if e.status_code == 404 and message == "Not Found":
            message = f"not found: {request.url.path}"
        return JSONResponse({"error": message}, status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(e).__name__}); the server goes on"}, status_code=500)

    # -- the API ----------------------------------------------------------------------------------
    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        """Server status and the model's condition controls."""
        with store.lock:
            n = len(store.sessions)
        return {"status": "ok", **store.model_info(), "sessions": n, "max_sessions": limits.max_sessions,
                "version": __version__}

    @app.post("/v1/sessions", status_code=201)
    def create_session(body: CreateSession) -> dict[str, Any]:
        """Start a nested-diffusion session (its root branch ``b0`` runs at once)."""
        s = store.create(body)
        return {"session_id": s.id, "branches": list(s.branches), "checkpoints": s.checkpoints,
                "events_url": f"/v1/sessions/{s.id}/events", "snapshot_url": f"/v1/sessions/{s.id}",
                "log_url": f"/v1/sessions/{s.id}/log"}

    @app.get("/v1/sessions/{session_id}")
    def snapshot(session_id: str) -> dict[str, Any]:
        """Everything about a session: branches, states, conditions, every kept frame."""
        return views.snapshot(store, session_id)

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    def delete_session(session_id: str) -> Response:
        store.delete(session_id)
        return Response(status_code=204)

    @app.get("/v1/sessions/{session_id}/log")
    def intervention_log(session_id: str) -> dict[str, Any]:
        """The intervention log: ``nested-diffusion generate --replay log.json`` reproduces the frames."""
        return views.log(store, session_id)

    @app.get("/v1/sessions/{session_id}/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(session_id: str, after: int | None = Query(None, ge=0),
                     last_event_id: str | None = Header(None)) -> StreamingResponse:
        """Server-Sent Events (``frame``, ``condition``, ``fork``, ``status``), numbered by ``id:``,
        resumable with ``Last-Event-ID`` or ``?after=N``; closed when every branch is terminal."""
        s = store.get(session_id)
        start = after or 0
        if last_event_id is not None:
            if not last_event_id.strip().isdigit():
                raise Invalid(f"Last-Event-ID must be a non-negative integer, got {last_event_id!r}")
            start = int(last_event_id)
        with store.lock:
            if s.streams >= limits.max_streams:
                raise Busy(f"this session already has {limits.max_streams} open event streams; close one",
                           {"Retry-After": "5"})
        return StreamingResponse(event_stream(store, s, start), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.patch("/v1/sessions/{session_id}/branches/{branch_id}/condition", status_code=202)
    def set_condition(session_id: str, branch_id: str, body: ConditionPatch) -> dict[str, Any]:
        """Change the condition from the next outer step on; the receipt names that step."""
        return store.set_condition(session_id, branch_id, body)

    @app.post("/v1/sessions/{session_id}/branches/{branch_id}/fork", status_code=201)
    def fork(session_id: str, branch_id: str, body: ForkRequest) -> dict[str, Any]:
        """Branch from the last completed step: ``count`` children, or ``count`` variations of ``image``."""
        return store.fork(session_id, branch_id, body)

    @app.delete("/v1/sessions/{session_id}/branches/{branch_id}", status_code=204)
    def prune(session_id: str, branch_id: str) -> Response:
        store.prune(session_id, branch_id)
        return Response(status_code=204)

    for action in ("pause", "resume", "stop"):
        def control(session_id: str, branch_id: str, action: str = action) -> dict[str, Any]:
            return store.control(session_id, branch_id, action)
        app.add_api_route(f"/v1/sessions/{{session_id}}/branches/{{branch_id}}/{action}", control, methods=["POST"],
                          name=action, summary=f"{action.capitalize()} a branch")

    @app.get("/v1/sessions/{session_id}/branches/{branch_id}/frames/{step}/{image}.png",
             response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def frame_png(session_id: str, branch_id: str, step: int, image: int) -> Response:
        """A frame as PNG, with seed, condition history and NFE in its text chunks."""
        picture, text = views.frame_png(store, session_id, branch_id, step, image)
        return Response(png_bytes(picture, text), media_type="image/png",
                        headers={"Cache-Control": "private, max-age=86400, immutable",
                                 "Content-Disposition": f'inline; filename="{branch_id}-step{step:03d}-nfe{text["nfe"]}'
                                                        f'-{image}.png"'})

    @app.get("/v1/sessions/{session_id}/branches/{branch_id}/animation/{image}.gif",
             response_class=Response, responses={200: {"content": {"image/gif": {}}}})
    def animation(session_id: str, branch_id: str, image: int) -> Response:
        """Every kept frame of one image of a branch, as a looping GIF."""
        frames = views.frame_sequence(store, session_id, branch_id, image)
        return Response(gif_bytes(frames), media_type="image/gif", headers={
            "Cache-Control": "no-store", "Content-Disposition": f'inline; filename="{branch_id}-{image}.gif"'})

    # -- the page ---------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

