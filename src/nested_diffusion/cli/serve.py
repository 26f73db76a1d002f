"""``nested-diffusion serve``: the anytime studio — a local web page and HTTP API (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
from typing import Any

from .options import DTYPES, Formatter, _number, embedded_models_help, positive_float, positive_int

_port = _number(int, "a port in [0, 65535] (0: any free port)", lambda v: 0 <= v <= 65535)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="the anytime studio: watch, stop, steer and branch generations in the browser",
        description="Serve the studio page and its HTTP API (/v1, Server-Sent Events, OpenAPI schema at "
                    "/openapi.json). With no arguments: the embedded digit model on the CPU, offline, on "
                    "http://127.0.0.1:7860/. Any --host other than localhost requires a token (generated and "
                    "printed when --token is not given). Ctrl-C stops it.",
        formatter_class=Formatter)
    p.add_argument("--model", default=None, help="hub id or local diffusers folder (default: the embedded MNIST digit model)"
                   + embedded_models_help())
    p.add_argument("--device", default="auto",
                   help="torch device(s), comma-separated for several (cuda:0,cuda:1; cpu,cpu): one copy of the model "
                        "and one worker per device, each session on the least-loaded one; auto: cuda if available, "
                        "else cpu")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype")
    p.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True,
                   help="pack the network calls of concurrent sessions on a device into one call per step "
                        "(throughput; frames then equal the library's within float rounding, BENCHMARKS.md §7); "
                        "--no-batch: one session step at a time, frames bit-equal to the library's")
    p.add_argument("--max-batch", type=positive_int, default=64, help="images in one packed network call at most")
    p.add_argument("--node", default=None, type=_node,
                   help="prefix of this server's session ids (NODE-…), so that a reverse proxy in front of several "
                        "servers routes each session to its server (docs/deployment.md)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but localhost needs a token")
    p.add_argument("--port", type=_port, default=7860, help="port (0: any free port)")
    p.add_argument("--max-sessions", type=positive_int, default=8, help="live sessions at once (429 beyond)")
    p.add_argument("--idle-timeout", type=positive_float, default=600.0,
                   help="seconds without a request or open event stream before a session expires")
    p.add_argument("--token", default=None,
                   help="API token required as 'Authorization: Bearer TOKEN' on /v1 (default: none on localhost, "
                        "generated for any other --host)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also accept this Host header (e.g. a reverse proxy's name); repeatable")
    p.set_defaults(run=run)


def _node(text: str) -> str:
    if not text or len(text) > 32 or not all(c.isalnum() or c == "_" for c in text):
        raise argparse.ArgumentTypeError(f"expected 1 to 32 letters, digits or '_', got {text!r}")
    return text


def devices(text: str) -> list[Any]:
    """``--device``: one torch device, or several comma-separated (repeats allowed: ``cpu,cpu``)."""
    from .options import resolve_device

    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise ValueError(f"--device {text!r}: expected device names separated by commas, e.g. cuda:0,cuda:1")
    return [resolve_device(name) for name in names]


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def resolve_token(host: str, token: str | None) -> str | None:
    """The API token: the one given (at least 16 characters), else a generated one for any host
    other than localhost, else none."""
    from ..studio.security import is_local_host

    if token is not None and len(token) < 16:
        raise ValueError("--token must be at least 16 characters (or omit it to have one generated)")
    if token is None and not is_local_host(host):
        return secrets.token_urlsafe(24)
    return token


def run(args: argparse.Namespace) -> int:
    from ..studio.security import WILDCARD_HOSTS

    token = resolve_token(args.host, args.token)
    sock = _bind(args.host, args.port)  # before loading the model: a busy port fails fast

    import uvicorn

    import torch

    from ..pipelines import NestedPipeline
    from ..studio.app import create_app
    from ..studio.limits import Limits
    from .options import quiet_loading

    targets = devices(args.device)
    with quiet_loading():  # one copy per device; a server never unpickles weights
        pipes = [NestedPipeline.from_pretrained(args.model, dtype=getattr(torch, args.dtype), device=d,
                                                use_safetensors=True) for d in targets]
    device = ",".join(str(p.adapter.device) for p in pipes)
    limits = Limits(max_sessions=args.max_sessions, idle_timeout=args.idle_timeout)
    app = create_app(pipes, model=args.model, dtype=args.dtype, limits=limits, host=args.host, token=token,
                     allowed_hosts=args.allow_host, batching=args.batch, max_batch=args.max_batch, node=args.node)
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if args.host in WILDCARD_HOSTS else (f"[{args.host}]" if ":" in args.host else args.host)
    url = f"http://{shown}:{port}/"
    print(f"nested-diffusion studio ({args.model or 'embedded digit model'} on {device}): "
          f"{url}{'#token=' + token if token else ''}", flush=True)
    if token:
        print(f"  API token: {token}   (Authorization: Bearer <token> on every /v1 request)", flush=True)
    if args.host in WILDCARD_HOSTS:
        print("  listening on every interface", flush=True)
    print("  Ctrl-C to stop", flush=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.studio.registry.shutdown()  # end the event streams, so that shutdown need not wait for them
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print("studio stopped", file=sys.stderr)
    return 0
