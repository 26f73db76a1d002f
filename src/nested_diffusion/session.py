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
from .samplers.noise import (Generator, check_generator, copy_generator, get_rng_state, select_generators,
                             set_rng_state)
from .schedules import Schedule, Time, as_schedule

__all__ = ["Frame", "Session", "StepInterrupted", "DeadlineExceeded", "StepCancelled", "CancelToken", "Model",
           "check_indices", "check_noise", "check_steps"]

@dataclass(frozen=True)
class Frame:
    """One anytime output.

    ``image`` has the shape of the initial noise: for nested diffusion the inner run's x̂0 (a
    sample-quality image), for the vanilla baseline the one-step x̂0 preview (the last frame's is
    the final sample). ``nfe`` counts network evaluations spent so far, ``step`` is 1-based out of
    ``num_steps``, ``timestep`` is the grid time at which this step's first network call was made
    (an integer timestep on a discrete VP schedule, a model time σ·T on a flow schedule).
    """

    image: torch.Tensor
    nfe: int
    step: int
    timestep: Time
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


def check_noise(noise: Any) -> torch.Tensor:
    """The initial noise: a finite floating-point tensor with a non-empty batch dimension."""
    if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
        raise TypeError("noise must be a floating-point tensor")
    if noise.ndim < 1 or noise.shape[0] == 0:
        raise ValueError(f"noise must have a non-empty batch dimension, got shape {tuple(noise.shape)}")
    if not torch.isfinite(noise).all():
        raise ValueError("noise contains NaN or infinite values")
    return noise


def check_steps(value: Any, name: str, schedule: Schedule) -> int:
    """A step count: a positive integer, at most the schedule's ``max_steps`` (T on a discrete schedule)."""
    limit = schedule.max_steps
    accepted = f"an integer in [1, {limit}] (the number of training timesteps)" if limit else "a positive integer"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {accepted}, got {type(value).__name__}")
    if value < 1 or (limit is not None and value > limit):
        raise ValueError(f"{name} must be {accepted}, got {value}")
    return value


def _select_rows(value: Any, rows: list[int], size: int) -> Any:
    """``value`` with its batch rows ``rows`` picked: tensors whose first dimension is ``size`` (the
    batch) are indexed, tuples, lists and dicts are walked, objects with a ``select_rows(rows)`` method
    (e.g. a restoration's measurements) index themselves, anything else is shared by every row."""
    if callable(getattr(value, "select_rows", None)):
        return value.select_rows(rows)
    if isinstance(value, torch.Tensor):
        if value.ndim > 0 and value.shape[0] == size:
            return value[torch.tensor(rows, dtype=torch.long, device=value.device)]
        return value
    if isinstance(value, dict):
        return {k: _select_rows(v, rows, size) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_select_rows(v, rows, size) for v in value)
    return value


class _CountingDenoiser:
    """The session's :func:`~nested_diffusion.denoiser.make_denoiser`, counting every network call
    (one call = one NFE); before each call it raises :class:`DeadlineExceeded` once ``deadline``
    has passed and :class:`StepCancelled` once ``cancel`` is set."""

    def __init__(self, session: "Session", deadline: float | None, cancel: CancelToken | None = None) -> None:
        self.denoise = make_denoiser(session.model, session.schedule, session.prediction_type, session.model_kwargs)
        self.deadline, self.cancel, self.nfe = deadline, cancel, 0

    def __call__(self, x: torch.Tensor, t: Time) -> torch.Tensor:
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            raise DeadlineExceeded
        if self.cancel is not None and self.cancel.is_set():
            raise StepCancelled
        self.nfe += 1
        return self.denoise(x, t)


class Session:
    """Base class of :class:`~nested_diffusion.NestedSession` and :class:`~nested_diffusion.VanillaSession`.

    Subclasses define ``num_steps``, ``timestep_at(k)``, ``cost_at(k)`` and ``_advance(denoise)``,
    which computes one step *without* mutating the session and returns ``(image, new_state)``.

    Everything a session holds per image lives in four places, which :meth:`fork` ``(indices=)`` indexes
    by one rule: :attr:`state` (what ``_advance`` commits: ``x``, a multistep carry…), :attr:`samplers`
    (samplers holding per-image data, e.g. a restoration's measurements, index themselves),
    :attr:`model_kwargs` and a per-image ``generator`` list.
    """

    num_steps: int

    def __init__(self, model: Model, schedule: Schedule | Any, noise: torch.Tensor, *,
                 prediction_type: str | None = None, generator: Generator = None,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t), got {type(model).__name__}")
        self.schedule = as_schedule(schedule)
        self.prediction_type = self.schedule.check_prediction_type(
            self.schedule.default_prediction_type if prediction_type is None else prediction_type)
        check_noise(noise)
        self.generator = check_generator(generator, len(noise))
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {type(model_kwargs).__name__}")
        self.model = model
        self.num_train_timesteps = self.schedule.num_train_timesteps
        self.model_kwargs: dict[str, Any] = dict(model_kwargs or {})
        #: per-image state, replaced (never modified in place) by each completed step
        self.state: dict[str, Any] = {"x": noise}
        #: the samplers a step uses (subclasses fill it in)
        self.samplers: dict[str, Any] = {}
        self.k = 0  # completed steps
        self.nfe = 0
        self.elapsed = 0.0
        self.last_frame: Frame | None = None

    @property
    def x(self) -> torch.Tensor:
        """The current state (x_T before the first step, the last outer state after it)."""
        return self.state["x"]

    @property
    def alphas_cumprod(self) -> list[float]:
        """ᾱ_t of a discrete VP schedule (``ValueError`` on other schedules: use :attr:`schedule`)."""
        if not hasattr(self.schedule, "alphas_cumprod"):
            raise ValueError(f"{self.schedule!r} has no alphas_cumprod table: use session.schedule")
        return self.schedule.alphas_cumprod.tolist()

    # -- subclass interface ------------------------------------------------------------------
    def timestep_at(self, k: int) -> Time:
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
        rng_state = get_rng_state(self.generator)
        try:
            image, state = self._advance(denoise)
        except BaseException:
            set_rng_state(self.generator, rng_state)  # an interrupted step leaves no trace, not even in the RNG
            raise
        self.state = {**self.state, **state}  # commit only after the whole step succeeded
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

    def fork(self, generator: Generator = None, indices: Sequence[int] | None = None) -> "Session":
        """An independent copy of this session that continues from the current state.

        Pass a fresh ``generator`` for a continuation that differs through new noise (branching);
        with ``None`` the child gets a copy of this session's generator state, so both continue
        identically until their conditioning differs. Tensors are shared, never mutated.

        ``indices`` keeps only those images of the batch, in that order; repeats are allowed, so
        ``indices=[i] * 4`` continues image i as four rows (variations once their noise differs: with
        one generator for the batch the rows draw different noise; with a per-image generator list the
        repeated rows copy image i's generator, so pass new generators for variations). The
        :attr:`state`, the samplers, the last frame, every batch-first tensor in ``model_kwargs`` and a
        per-image generator list are indexed (adapters give one row per image); other values are shared.
        """
        size = len(self.x)
        rows = None if indices is None else check_indices(indices, size)
        if generator is not None:
            generator = check_generator(generator, size if rows is None else len(rows))
        child = copy.copy(self)
        child.model_kwargs = dict(self.model_kwargs)
        if rows is not None:  # one rule for every per-image value: index its rows
            child.state = _select_rows(self.state, rows, size)
            child.samplers = _select_rows(self.samplers, rows, size)
            child.model_kwargs = _select_rows(self.model_kwargs, rows, size)
            if self.last_frame is not None:
                child.last_frame = dataclasses.replace(self.last_frame,
                                                       image=_select_rows(self.last_frame.image, rows, size))
        if generator is None:
            generator = copy_generator(self.generator if rows is None else select_generators(self.generator, rows))
        child.generator = generator
        return child

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(step {self.k}/{self.num_steps}, nfe {self.nfe}/{self.total_nfe}, "
                f"{self.schedule!r}, prediction_type={self.prediction_type!r})")
