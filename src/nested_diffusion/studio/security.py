"""How the studio defends a local ML server (an ASGI middleware in front of every route).

In order, before any route runs:

1. ``Host`` must name this server — localhost, the bound address, ``--allow-host`` names, and any IP
   literal when bound to all interfaces — else 403: a DNS-rebinding page (``evil.example`` resolving
   to 127.0.0.1) cannot talk to it.
2. State-changing requests (POST, PATCH, PUT, DELETE) whose ``Origin`` is not this server's own, or
   that a browser marks ``Sec-Fetch-Site: cross-site``, get 403. No CORS headers are ever sent, so
   other origins cannot read any response either.
3. With a token (required for any ``--host`` other than localhost), every ``/v1`` request needs
   ``Authorization: Bearer <token>`` (401 otherwise; compared in constant time).
4. Request bodies over ``max_body_bytes`` get 413, whether announced by ``Content-Length`` or not — or
   over the cap of their path in ``body_limits`` (image uploads: ``max_upload_bytes``).

Every response carries ``Content-Security-Policy: default-src 'self'`` (no inline script, no CDN),
``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY`` and
``Cross-Origin-Resource-Policy: same-origin``. Errors are JSON ``{"error": ...}``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

__all__ = ["SecurityMiddleware", "LOCAL_HOSTS", "is_local_host", "content_security_policy"]

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_local_host(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (no token needed)."""
    return host.lower() in LOCAL_HOSTS or host.lower().startswith("127.")


def content_security_policy(token: bool) -> str:
    """``default-src 'self'``; with a token, images are fetched with the header and shown as blobs."""
    policy = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    return policy + ("; img-src 'self' blob:" if token else "")


def _split_host(value: str) -> tuple[str, int | None]:
    """``("name", port)`` of a Host header value (``[::1]:7860`` → ``("::1", 7860)``)."""
    try:
        parts = urlsplit("//" + value)
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class SecurityMiddleware:
    """See the module docstring. ``bind_host`` is the address the server listens on."""

    def __init__(self, app: Callable, *, bind_host: str = "127.0.0.1", token: str | None = None,
                 allowed_hosts: Iterable[str] = (), max_body_bytes: int = 64 * 1024,
                 body_limits: dict[str, int] | None = None) -> None:
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes
        self.body_limits = dict(body_limits or {})  # path → its own cap on request bodies
        bind = bind_host.lower().strip("[]")
        self.any_ip = bind in WILDCARD_HOSTS
        self.hosts = set(LOCAL_HOSTS) | {h.lower().strip("[]") for h in allowed_hosts}
        if not self.any_ip:
            self.hosts.add(bind)
        self.headers = [(b"content-security-policy", content_security_policy(bool(token)).encode()),
                        (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                        (b"x-frame-options", b"DENY"), (b"cross-origin-resource-policy", b"same-origin"),
                        (b"cross-origin-opener-policy", b"same-origin")]

    def host_allowed(self, name: str) -> bool:
        return name in self.hosts or (self.any_ip and _is_ip(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name, port = _split_host(host)
        if not self.host_allowed(name):
            return await self._error(send, 403, f"forbidden: Host {host!r} is not this server "
                                                "(DNS-rebinding protection; see --allow-host)")
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and not self._same_origin(origin, name, port):
                return await self._error(send, 403, f"forbidden: cross-origin request from {origin!r}")
            if headers.get("sec-fetch-site") == "cross-site":
                return await self._error(send, 403, "forbidden: cross-site request")
        if self.token is not None and scope["path"].startswith("/v1"):
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
                return await self._error(send, 401, "unauthorized: this server needs Authorization: Bearer <token> "
                                                    "(printed by nested-diffusion serve)",
                                         [(b"www-authenticate", b"Bearer")])
        limit = self.body_limits.get(scope["path"], self.max_body_bytes)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._error(send, 413, f"request body too large: at most {limit} bytes")
        if scope["method"] not in SAFE_METHODS:
            body = await self._read_body(receive, limit)
            if body is None:
                return await self._error(send, 413, f"request body too large: at most {limit} bytes")
            receive = self._replay(body, receive)
        await self.app(scope, receive, self._with_headers(send))

    def _same_origin(self, origin: str, host_name: str, host_port: int | None) -> bool:
        try:
            parts = urlsplit(origin)
            name, port = (parts.hostname or "").lower(), parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not self.host_allowed(name):
            return False  # includes "null" (sandboxed frames, file://)
        default = 443 if parts.scheme == "https" else 80
        return name == host_name and (port or default) == (host_port or default)

    async def _read_body(self, receive: Receive, limit: int) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _replay(body: bytes, receive: Receive) -> Receive:
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        return replay

    def _with_headers(self, send: Send) -> Send:
        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *[(k, v) for k, v in self.headers if k not in names]]}
            await send(message)
        return wrapped

    async def _error(self, send: Send, status: int, message: str, extra: list | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        await self._with_headers(send)({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]})
        await send({"type": "http.response.body", "body": body})
