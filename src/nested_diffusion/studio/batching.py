"""Step-level continuous batching: the network calls of concurrent branches on one device, packed.

Every running branch's next step runs in a thread of its own, on a private fork of its library
session whose network is a :class:`Batcher` stand-in: a call ``model(x, t, **model_kwargs)`` is
queued and the thread waits. Each *tick* the device's worker waits until every step in flight is
either waiting on a call or finished, groups the waiting calls that can share one network call
(:func:`signature`: same model, same image shape and dtype, the same kinds of model arguments), and
makes one adapter call per group with the rows concatenated — per-row timesteps, per-row conditions
and, where the adapter takes them (``per_row_guidance``), per-row guidance scales — then hands each
step its rows back. Per-branch state (sampler carry, generator, condition) never leaves the branch's
own thread, so a step computes exactly what it computes alone except for the network's float
rounding at another batch size. A call alone in its tick is the branch's own call, bit for bit.

Cancellation: a call whose step was cancelled (pause, stop, prune, delete) is answered with
:class:`~nested_diffusion.session.StepCancelled` instead of being packed, so a stopped branch costs no
network call after the tick that sees it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..session import StepCancelled

__all__ = ["Batcher", "Call", "signature", "pack", "split"]


@dataclass(eq=False)
class Call:
    """One queued network call of one step (``order``: its step's admission order)."""

    x: torch.Tensor
    t: torch.Tensor
    kwargs: dict[str, Any]
    order: int
    cancel: Any = None
    result: torch.Tensor | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def rows(self) -> int:
        return self.x.shape[0]


def _kind(name: str, value: Any, rows: int, per_row: bool) -> tuple:
    if value is None:
        return ("none",)
    if isinstance(value, torch.Tensor):
        if value.ndim >= 1 and value.shape[0] == rows:
            return ("rows", tuple(value.shape[1:]), value.dtype, value.device)
        return ("shared", id(value))
    if per_row and name == "guidance_scale" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("per-row",)
    if isinstance(value, (bool, int, float, str)):
        return ("value", value)
    return ("shared", id(value))


def signature(model: Any, call: Call) -> tuple:
    """Calls with equal signatures can share one network call of ``model``."""
    per_row = bool(getattr(model, "per_row_guidance", False))
    x, t = call.x, call.t
    return (tuple(x.shape[1:]), x.dtype, x.device, t.dtype, t.device, tuple(sorted(
        (name, _kind(name, value, call.rows, per_row)) for name, value in call.kwargs.items())))


def pack(calls: list[Call]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(x, t, model_kwargs)`` of one network call for ``calls`` (equal signatures), rows in order."""
    first = calls[0]
    if len(calls) == 1:
        return first.x, first.t, first.kwargs
    kwargs: dict[str, Any] = {}
    for name, value in first.kwargs.items():
        values = [c.kwargs[name] for c in calls]
        if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == first.rows:
            kwargs[name] = torch.cat(values)
        elif name == "guidance_scale" and isinstance(value, (int, float)) and any(v != value for v in values):
            kwargs[name] = torch.tensor([float(v) for c, v in zip(calls, values) for _ in range(c.rows)])
        else:
            kwargs[name] = value
    return torch.cat([c.x for c in calls]), torch.cat([c.t for c in calls]), kwargs


def split(out: torch.Tensor, calls: list[Call]) -> list[torch.Tensor]:
    """Each call's rows of a packed output."""
    if len(calls) == 1:
        return [out]
    return list(out.split([c.rows for c in calls]))


class Batcher:
    """The packing point of one device: steps' calls in, one network call per compatible group out.

    ``model`` is the device's adapter; ``max_rows`` caps the rows of one call (a group beyond it is
    split, in order). Counters: ``calls`` (network calls made) and ``rows`` (rows computed)."""

    def __init__(self, model: Callable[..., torch.Tensor], max_rows: int = 64) -> None:
        self.model, self.max_rows = model, max_rows
        self.lock = threading.Condition()
        self.queue: list[Call] = []
        self.active = 0  # steps running (neither waiting on a call nor finished)
        self.calls = 0
        self.rows = 0
        self.on_call: Callable[[int, int], None] | None = None  # hook(rows, calls packed) for tests and benchmarks

    # -- the steps' side --------------------------------------------------------------------------------
    def enter(self) -> None:
        """A step was admitted: it counts as running until it waits or finishes."""
        with self.lock:
            self.active += 1

    def leave(self) -> None:
        """A step finished (committed, failed or cancelled)."""
        with self.lock:
            self.active -= 1
            self.lock.notify_all()

    def stand_in(self, order: int, cancel: Any) -> Callable[..., torch.Tensor]:
        """The network as one step sees it: queue the call, wait for its rows."""
        def network(x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            call = Call(x, t, kwargs, order, cancel)
            with self.lock:
                self.queue.append(call)
                self.active -= 1
                self.lock.notify_all()
            call.done.wait()  # the deliverer counted this step as running again
            if call.error is not None:
                raise call.error
            return call.result
        return network

    # -- the worker's side ------------------------------------------------------------------------------
    def settled(self) -> bool:
        """Every admitted step waits on a call or has finished (call with :attr:`lock` held)."""
        return self.active <= 0

    def idle(self) -> bool:
        """No step in flight at all (call with :attr:`lock` held)."""
        return self.active <= 0 and not self.queue

    def wait_settled(self, timeout: float | None = None) -> bool:
        with self.lock:
            return self.lock.wait_for(self.settled, timeout)

    def _deliver(self, call: Call, result: torch.Tensor | None = None, error: BaseException | None = None) -> None:
        with self.lock:
            call.result, call.error = result, error
            self.active += 1
            call.done.set()

    def tick(self) -> int:
        """Answer every queued call: cancelled ones with ``StepCancelled``, the others in packed network
        calls (groups in admission order). Returns the number of network calls made."""
        with self.lock:
            queued, self.queue = sorted(self.queue, key=lambda c: c.order), []
        groups: dict[tuple, list[Call]] = {}
        for call in queued:
            if call.cancel is not None and call.cancel.is_set():
                self._deliver(call, error=StepCancelled())
                continue
            groups.setdefault(signature(self.model, call), []).append(call)
        made = 0
        for group in groups.values():
            chunk: list[Call] = []
            for call in group:
                if chunk and sum(c.rows for c in chunk) + call.rows > self.max_rows:
                    made += self._run(chunk)
                    chunk = []
                chunk.append(call)
            made += self._run(chunk)
        return made

    def _run(self, calls: list[Call]) -> int:
        x, t, kwargs = pack(calls)
        error: BaseException | None = None
        try:
            with torch.inference_mode():
                out = self.model(x, t, **kwargs)
            parts = split(out, calls)
        except BaseException as e:  # every step of the group fails with the network's error
            parts, error = None, e
        self.calls += 1
        self.rows += x.shape[0]
        if self.on_call is not None:
            self.on_call(x.shape[0], len(calls))
        for i, call in enumerate(calls):
            self._deliver(call, None if parts is None else parts[i], error if parts is None else None)
        return 1
