"""Resumable anytime sessions: the outer loop as an object.

A session is an iterator of :class:`Frame` s. Between frames the caller may change the
conditioning passed to the model (:attr:`Session.model_kwargs`), :meth:`~Session.fork` into
independent continuations (of the whole batch or of chosen images), or stop; :meth:`~Session.run`
stops at an NFE budget or a wall-clock deadline and returns the last *complete* frame, never a
half-denoised tensor. A step can also be cancelled from another thread (``step(cancel=event)``):
like a missed deadline, it then leaves the session exactly as before.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, Sequence

import torch

from .denoiser import Model, make_denoiser
from .schedules import PREDICTION_TYPES, check_alphas_cumprod

__all__ = ["Frame", "Session", "StepInterrupted", "DeadlineExceeded", "StepCancelled", "CancelToken", "Model",
           "check_indices"]

@dataclass(frozen=True)
class Frame:
    """One anytime output.

    ``image`` has the shape of the initial noise: for nested diffusion the inner run's x̂0 (a
    sample-quality image), for the vanilla baseline the one-step x̂0 preview (the last frame's is
    the final sample). ``nfe`` counts network evaluations spent so far, ``step`` is 1-based out of
    ``num_steps``, ``timestep`` is the timestep at which this step's first network call was made.
    """

    image: torch.Tensor
    nfe: int
    step: int
    timestep: int
    num_steps: int
    elapsed: float = 0.0

    @property
    def is_final(self) -> bool:
        return self.step == self.num_steps


class StepInterrupted(RuntimeError):
    """A step stopped before its end; the session is left exactly as before the step."""


class DeadlineExceeded(StepInterrupted):
    """Raised inside a step when the wall-clock deadline passes; the step is discarded."""


class StepCancelled(StepInterrupted):
    """Raised inside a step when its ``cancel`` token is set; the step is discarded."""


class CancelToken(Protocol):
    """Anything with ``is_set()``, e.g. :class:`threading.Event`."""

    def is_set(self) -> bool: ...


def check_indices(indices: Any, size: int, name: str = "indices") -> list[int]:
    """A non-empty sequence of image indices in ``[0, size)`` (repeats allowed), as a list."""
    if isinstance(indices, torch.Tensor):
        indices = indices.reshape(-1).tolist()
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence) or len(indices) == 0 \
            or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < size for i in indices):
        raise ValueError(f"{name} must be a non-empty sequence of image indices in [0, {size - 1}], got {indices!r}")
    return list(indices)


def _select_rows(value: Any, rows: list[int], size: int) -> Any:
    """``value`` with its batch rows ``rows`` picked: tensors whose first dimension is ``size`` (the
    batch) are indexed, tuples and lists are walked, objects with a ``select_rows(rows)`` method
    (e.g. a restoration's measurements) index themselves, anything else is shared by every row."""
    if callable(getattr(value, "select_rows", None)):
        return value.select_rows(rows)
    if isinstance(value, torch.Tensor):
        if value.ndim > 0 and value.shape[0] == size:
            return value[torch.tensor(rows, dtype=torch.long, device=value.device)]
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_select_rows(v, rows, size) for v in value)
    return value


class _CountingDenoiser:
    """The session's :func:`~nested_diffusion.denoiser.make_denoiser`, counting every network call
    (one call = one NFE); before each call it raises :class:`DeadlineExceeded` once ``deadline``
    has passed and :class:`StepCancelled` once ``cancel`` is set."""

    def __init__(self, session: "Session", deadline: float | None, cancel: CancelToken | None = None) -> None:
        self.denoise = make_denoiser(session.model, session.alphas_cumprod, session.prediction_type,
                                     session.model_kwargs)
        self.deadline, self.cancel, self.nfe = deadline, cancel, 0

    def __call__(self, x: torch.Tensor, t: int) -> torch.Tensor:
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            raise DeadlineExceeded
        if self.cancel is not None and self.cancel.is_set():
            raise StepCancelled
        self.nfe += 1
        return self.denoise(x, t)


class Session:
    """Base class of :class:`~nested_diffusion.NestedSession` and :class:`~nested_diffusion.VanillaSession`.

    Subclasses define ``num_steps``, ``timestep_at(k)``, ``cost_at(k)`` and ``_advance(denoise)``,
    which computes one step *without* mutating the session and returns ``(image, new_state)``;
    ``batch_state`` names the state attributes that hold one row per image (for ``fork(indices=)``).
    """

    num_steps: int
    batch_state: tuple[str, ...] = ("x",)

    def __init__(self, model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *,
                 prediction_type: str = "epsilon", generator: torch.Generator | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t), got {type(model).__name__}")
        ac = check_alphas_cumprod(alphas_cumprod)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
            raise TypeError("noise must be a floating-point tensor")
        if noise.ndim < 1 or noise.shape[0] == 0:
            raise ValueError(f"noise must have a non-empty batch dimension, got shape {tuple(noise.shape)}")
        if not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or infinite values")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {type(model_kwargs).__name__}")
        self.model = model
        self.alphas_cumprod: list[float] = ac.tolist()
        self.num_train_timesteps = len(self.alphas_cumprod)
        self.prediction_type = prediction_type
        self.generator = generator
        self.model_kwargs: dict[str, Any] = dict(model_kwargs or {})
        self.x = noise  # never modified in place
        self.k = 0  # completed steps
        self.nfe = 0
        self.elapsed = 0.0
        self.last_frame: Frame | None = None

    # -- subclass interface ------------------------------------------------------------------
    def timestep_at(self, k: int) -> int:
        raise NotImplementedError

    def cost_at(self, k: int) -> int:
        """Network evaluations that step ``k`` (0-based) will spend."""
        raise NotImplementedError

    def _advance(self, denoise: _CountingDenoiser) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    # -- public API --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.k >= self.num_steps

    @property
    def next_cost(self) -> int:
        """NFEs of the next step (0 when done)."""
        return 0 if self.done else self.cost_at(self.k)

    @property
    def total_nfe(self) -> int:
        """NFEs the whole session spends if run to the end."""
        return sum(self.cost_at(k) for k in range(self.num_steps))

    def checkpoints(self) -> list[int]:
        """Cumulative NFE count after each step: the x-axis of an anytime curve."""
        out, total = [], 0
        for k in range(self.num_steps):
            total += self.cost_at(k)
            out.append(total)
        return out

    def step(self, deadline: float | None = None, cancel: CancelToken | None = None) -> Frame:
        """Run one step and return its frame.

        ``deadline`` is an absolute ``time.perf_counter()`` value; if it passes before the step
        completes, :class:`DeadlineExceeded` is raised and the session is left exactly as before.
        ``cancel`` (e.g. a :class:`threading.Event` set by another thread) is checked before every
        network call: once set, :class:`StepCancelled` is raised, with the same guarantee.
        """
        if self.done:
            raise StopIteration("session is complete")
        if cancel is not None and not callable(getattr(cancel, "is_set", None)):
            raise TypeError(f"cancel must have an is_set() method (e.g. threading.Event), got {type(cancel).__name__}")
        start = time.perf_counter()
        denoise = _CountingDenoiser(self, deadline, cancel)
        timestep = self.timestep_at(self.k)
        rng_state = self.generator.get_state() if self.generator is not None else None
        try:
            image, state = self._advance(denoise)
        except BaseException:
            if rng_state is not None:  # an interrupted step leaves no trace, not even in the RNG
                self.generator.set_state(rng_state)
            raise
        for name, value in state.items():  # commit only after the whole step succeeded
            setattr(self, name, value)
        self.k += 1
        self.nfe += denoise.nfe
        self.elapsed += time.perf_counter() - start
        self.last_frame = Frame(image=image, nfe=self.nfe, step=self.k, timestep=timestep,
                                num_steps=self.num_steps, elapsed=self.elapsed)
        return self.last_frame

    def __iter__(self) -> "Session":
        return self

    def __next__(self) -> Frame:
        if self.done:
            raise StopIteration
        return self.step()

    def frames(self, max_nfe: int | None = None, deadline: float | None = None) -> Iterator[Frame]:
        """Yield frames until done, until the next step would exceed ``max_nfe`` total NFEs, or
        until ``deadline`` seconds (wall clock, from this call) pass. A step interrupted by the
        deadline is discarded, so the session can be resumed later."""
        if max_nfe is not None:
            if isinstance(max_nfe, bool) or not isinstance(max_nfe, int) or max_nfe <= 0:
                raise ValueError(f"max_nfe must be a positive integer, got {max_nfe!r}")
        stop_at = None
        if deadline is not None:
            if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not deadline > 0 \
                    or not math.isfinite(deadline):
                raise ValueError(f"deadline must be a positive number of seconds, got {deadline!r}")
            stop_at = time.perf_counter() + deadline
        return self._frames(max_nfe, stop_at)

    def _frames(self, max_nfe: int | None, stop_at: float | None) -> Iterator[Frame]:
        while not self.done:
            if max_nfe is not None and self.nfe + self.next_cost > max_nfe:
                return
            try:
                frame = self.step(stop_at)
            except DeadlineExceeded:
                return
            yield frame

    def run(self, max_nfe: int | None = None, deadline: float | None = None) -> Frame | None:
        """The blocking form of :meth:`frames`: drain it and return the last complete frame
        (``None`` if none completed)."""
        for _ in self.frames(max_nfe, deadline):
            pass
        return self.last_frame

    def fork(self, generator: torch.Generator | None = None, indices: Sequence[int] | None = None) -> "Session":
        """An independent copy of this session that continues from the current state.

        Pass a fresh ``generator`` for a continuation that differs through new noise (branching);
        with ``None`` the child gets a copy of this session's generator state, so both continue
        identically until their conditioning differs. Tensors are shared, never mutated.

        ``indices`` keeps only those images of the batch, in that order; repeats are allowed, so
        ``indices=[i] * 4`` continues image i as four rows (variations once their noise differs).
        The state, the last frame and every tensor in ``model_kwargs`` whose first dimension is the
        batch size are indexed (adapters give one row per image); other values are shared.
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        rows = None if indices is None else check_indices(indices, len(self.x))
        child = copy.copy(self)
        child.model_kwargs = dict(self.model_kwargs)
        if rows is not None:  # one rule for every batch-first value: index its rows
            size = len(self.x)
            for name in self.batch_state:
                setattr(child, name, _select_rows(getattr(self, name), rows, size))
            child.model_kwargs = {k: _select_rows(v, rows, size) for k, v in self.model_kwargs.items()}
            if self.last_frame is not None:
                child.last_frame = dataclasses.replace(self.last_frame,
                                                       image=_select_rows(self.last_frame.image, rows, size))
        if generator is None and self.generator is not None:
            generator = torch.Generator(device=self.generator.device)
            generator.set_state(self.generator.get_state())
        child.generator = generator if generator is not None else self.generator
        return child

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(step {self.k}/{self.num_steps}, nfe {self.nfe}/{self.total_nfe}, "
                f"prediction_type={self.prediction_type!r})")
