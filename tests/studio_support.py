"""Shared helpers of the studio tests (their fixtures are in conftest.py): the embedded digit pipeline, in-process apps, a real uvicorn
server on 127.0.0.1 and a free port, and frame comparisons."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
from PIL import Image

BASE = "http://127.0.0.1:7860"
_PIPE = None


def digits():
    """The embedded digit pipeline, loaded once per test process."""
    global _PIPE
    if _PIPE is None:
        from nested_diffusion import NestedPipeline

        _PIPE = NestedPipeline.from_pretrained()
    return _PIPE


def gen(seed: int):
    """A CPU generator seeded with ``seed``."""
    import torch

    return torch.Generator().manual_seed(seed)


def client(app, **kwargs):
    """An httpx-based TestClient that talks to ``app`` as http://127.0.0.1:7860."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=BASE, **kwargs)


def drain(app, limit: int = 10_000) -> int:
    """Run the workers synchronously until no branch is running; returns how many rounds ran (one
    unit each unbatched, one frame of every running branch batched)."""
    studio = app.state.studio
    for n in range(limit):
        if not studio.run_once():
            return n
    raise AssertionError("the worker did not finish")


def take_unit(app, device: int = 0):
    """The next unit of a device's worker, its step marked in flight (as the worker would take it)."""
    units = app.state.studio.workers[device].admit(1)
    assert units, "no runnable branch"
    return units[0]


def commit_unit(app, unit, frame) -> bool:
    """Commit a computed unit as the worker does; whether its frame was kept."""
    from nested_diffusion.studio.scheduler import commit

    with app.state.studio.lock:
        return commit(unit, frame)


def fail_unit(app, unit, error) -> None:
    from nested_diffusion.studio.scheduler import fail

    with app.state.studio.lock:
        fail(unit, error)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im).copy()


def wait_for(condition, timeout: float = 60.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``condition()`` until truthy (bounded by ``timeout`` seconds); returns its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class LiveServer:
    """A real uvicorn serving ``app`` on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        wait_for(lambda: self.server.started, 30, what="uvicorn to start")
        return self

    def __exit__(self, *exc) -> None:
        self.app.state.studio.registry.shutdown()
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
