"""The studio's HTTP application: routers per resource (:mod:`.routers`) over one
:class:`~.service.Studio`, the security middleware, JSON errors, and the page at ``/``.

Routes only translate HTTP to the studio's services (reached through :mod:`.deps`); the sampling is
the library's. Every error is JSON ``{"error": ...}``: a 4xx documented on its route, a 405 with the
path's ``Allow`` methods, an unexpected failure a 500 without a traceback, and the server goes on.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .errors import StudioError
from .limits import Limits
from .routers import ROUTERS
from .routers.page import STATIC
from .schemas import format_errors
from .security import SecurityMiddleware
from .service import Studio

__all__ = ["create_app", "STATIC"]

log = logging.getLogger("nested_diffusion.studio")


def create_app(pipe: Any | Sequence[Any], *, model: str | None = None, dtype: str = "float32",
               limits: Limits = Limits(), host: str = "127.0.0.1", token: str | None = None,
               allowed_hosts: Iterable[str] = (), start_worker: bool = True, batching: bool = True,
               max_batch: int = 64, node: str | None = None) -> FastAPI:
    """The studio for a loaded :class:`~nested_diffusion.NestedPipeline`, or one per device (the same
    model on each; sessions are placed on the least-loaded one). ``model``: the name it was loaded
    from (``None``: the embedded model). ``batching``: pack concurrent branches' network calls
    (:mod:`.batching`); ``False`` keeps every frame bit-equal to the library's. ``node``: a prefix for
    session ids, so that a reverse proxy can route a session to its server. ``start_worker=False``
    leaves scheduling to the caller (``app.state.studio.run_once()``), for deterministic tests."""
    from .. import __version__

    pipes = list(pipe) if isinstance(pipe, (list, tuple)) else [pipe]
    studio = Studio(pipes, model=model, dtype=dtype, limits=limits, batching=batching, max_batch=max_batch, node=node)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if start_worker:
            studio.start()
        try:
            yield
        finally:
            studio.stop()

    app = FastAPI(title="nested-diffusion studio", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json", lifespan=lifespan,
                  description="Watch, stop, steer and branch anytime generations (nested diffusion). Errors are "
                              "JSON `{\"error\": …}`; 422: the request breaks this contract, 409: valid but not "
                              "for the resource's current state.")
    app.state.studio = studio
    app.add_middleware(SecurityMiddleware, bind_host=host, token=token, allowed_hosts=allowed_hosts,
                       max_body_bytes=limits.max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(StudioError, _studio_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with this server's request contract in ``components`` (model-specific)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(app.state.studio.contract.components())
        for path in schema["paths"].values():  # FastAPI's own 422 entry: ours is the studio's ErrorBody
            for operation in path.values():
                answer = operation.get("responses", {}).get("422")
                if answer is not None:
                    answer["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


async def _studio_error(request: Request, e: StudioError) -> JSONResponse:
    return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)


async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": format_errors(e.errors())}, status_code=422)


def allowed_methods(app: Any, scope: dict[str, Any]) -> list[str]:
    """Every method some route serves at this path (the ``Allow`` of a 405)."""
    methods: set[str] = set()
    for route in app.router.routes:
        served = getattr(route, "methods", None) or ()
        if any(route.matches({**scope, "method": m})[0] == Match.FULL for m in served):
            methods |= set(served)
    return sorted(methods)


async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    message = e.detail if isinstance(e.detail, str) else "error"
    headers = dict(getattr(e, "headers", None) or {})
    if e.status_code == 404 and message == "Not Found":
        message = f"not found: {request.url.path}"
    if e.status_code == 405:
        allow = allowed_methods(request.app, request.scope)
        headers["Allow"] = ", ".join(allow)
        message = f"method {request.method} not allowed here; allowed: {', '.join(allow)}"
    return JSONResponse({"error": message}, status_code=e.status_code, headers=headers)


async def _internal_error(request: Request, e: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error ({type(e).__name__}); the server goes on"}, status_code=500)
