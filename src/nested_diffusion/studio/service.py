"""The studio's services for one server: one lock, the session registry, the uploaded images, the request
contract and one worker per device — what the routers reach through their dependencies (:mod:`.deps`)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

from ..models import model_label
from .conditions import model_info
from .editing import editing_info
from .limits import Limits
from .registry import Registry
from .schemas import Contract
from .uploads import Uploads
from .worker import Worker

__all__ = ["Studio"]


class Studio:
    """Sessions of one model served from one or more devices (``pipes``: one loaded
    :class:`~nested_diffusion.NestedPipeline` per device, the same model on each)."""

    def __init__(self, pipes: Sequence[Any], *, model: str | None = None, dtype: str = "float32",
                 limits: Limits = Limits(), batching: bool = True, max_batch: int = 64, node: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not pipes:
            raise ValueError("the studio needs at least one pipeline (one per device)")
        families = {p.adapter.family for p in pipes}
        if len(families) != 1:
            raise ValueError(f"every device must run the same model, got families {sorted(families)}")
        self.pipes, self.model, self.dtype, self.limits, self.batching = list(pipes), model, dtype, limits, batching
        self.model_name = model_label(model)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)  # workers wait on it for work
        self.uploads = Uploads(limits.max_uploads, limits.max_upload_store_pixels)
        self.registry = Registry(self.pipes, limits, self.lock, self.changed, clock=clock, node=node,
                                 uploads=self.uploads)
        adapter = self.pipes[0].adapter
        self.contract = Contract.build(adapter.conditioning, getattr(adapter, "num_classes", None),
                                       adapter.size_rule(), limits, editing_info(adapter))
        self.workers = [Worker(self, d, batching=batching, max_rows=max_batch) for d in range(len(self.pipes))]

    @property
    def adapter(self) -> Any:
        return self.pipes[0].adapter

    def wake(self) -> None:
        """Something became runnable: wake the workers."""
        with self.lock:
            self.changed.notify_all()

    def info(self) -> dict[str, Any]:
        """``GET /v1/health``'s model and server part."""
        import dataclasses

        with self.lock:
            counts = [self.registry.count(d) for d in range(len(self.pipes))]
            loads = self.registry.loads()
        devices = [{"device": str(p.adapter.device), "sessions": n, "load": load}
                   for p, n, load in zip(self.pipes, counts, loads)]
        return {"model": self.model_name, **model_info(self.adapter), "editing": editing_info(self.adapter),
                "device": devices[0]["device"],
                "devices": devices, "dtype": self.dtype, "batching": self.batching, "node": self.registry.node,
                "limits": dataclasses.asdict(self.limits)}

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        self.registry.shutdown()
        for w in self.workers:
            w.stop()

    def run_once(self) -> bool:
        """Every device's :meth:`Worker.run_once` (deterministic tests drive the studio with it)."""
        ran = [w.run_once() for w in self.workers]
        return any(ran)
