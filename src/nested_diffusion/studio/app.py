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

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from .deps import no_unknown_query
from .errors import StudioError
from .limits import Limits
from .routers import ROUTERS
from .routers.images import router as uploads
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
    # JSON bodies are capped at max_body_bytes; uploaded image files have their own, larger cap
    app.add_middleware(SecurityMiddleware, bind_host=host, token=token, allowed_hosts=allowed_hosts,
                       max_body_bytes=limits.max_body_bytes, body_limits={uploads.prefix: limits.max_upload_bytes})
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(no_unknown_query)])
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
        for path in schema["paths"].values():
            for operation in path.values():
                answer = operation.get("responses", {}).get("422")  # FastAPI's own 422: ours is ErrorBody
                if answer is not None:
                    answer["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                for parameter in operation.get("parameters", []):  # a parameter is absent, never null
                    options = parameter["schema"].get("anyOf")
                    if options and {"type": "null"} in options:
                        rest = [o for o in options if o != {"type": "null"}]
                        extra = {k: v for k, v in parameter["schema"].items() if k != "anyOf"}
                        parameter["schema"] = {**extra, **rest[0]} if len(rest) == 1 else {**extra, "anyOf": rest}
        schema["components"]["schemas"].pop("HTTPValidationError", None)
        schema["components"]["schemas"].pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


async def _studio_error(request: Request, e: StudioError) -> JSONResponse:
    return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)


async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": format_errors(e.errors())}, status_code=422)


def allowed_methods(app: Any, path: str) -> list[str] | None:
    """Every method the API document serves at ``path`` (HEAD with GET), the ``Allow`` of a 405;
    ``None`` for paths outside the document (the page)."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        regex, _, _ = compile_path(template)
        if regex.match(path):
            methods |= {m.upper() for m in operations}
    if not methods:
        return None
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
    message = e.detail if isinstance(e.detail, str) else "error"
    headers = dict(getattr(e, "headers", None) or {})
    if e.status_code == 404 and message == "Not Found":
        message = f"not found: {request.url.path}"
    if e.status_code == 405:
        allow = allowed_methods(request.app, request.url.path)
        allow_text = ", ".join(allow) if allow is not None else headers.get("Allow", "")
        headers["Allow"] = allow_text
        message = f"method {request.method} not allowed here; allowed: {allow_text}"
    return JSONResponse({"error": message}, status_code=e.status_code, headers=headers)


async def _internal_error(request: Request, e: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error ({type(e).__name__}); the server goes on"}, status_code=500)
