"""Choosing the nested layout for an NFE budget and the model's own noise schedule.

Two public functions: :func:`plan_layout` is the project's measured default for a budget on a schedule,
and :func:`resolve_layout` fills in whatever part of a layout a user left out (every entry point —
``NestedPipeline``, ``generate``, ``evaluate``, the studio, ``nested_restore`` — goes through it).
Both return a :class:`Layout`, whose :meth:`~Layout.session_kwargs` are
:func:`~nested_diffusion.nested_sample`'s keyword arguments.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple, Sequence

from .defaults import (DEFAULT_BUDGET, DEFAULT_FRAME_FRACTIONS, DEFAULT_INNER_ETA, DEFAULT_INNER_SAMPLER,
                       DEFAULT_OUTER_ETA, DEFAULT_OUTER_SIGMAS, DEFAULT_OUTER_UPDATE, DEFAULT_STEPS)
from .nested import nested_grids
from .schedules import Schedule, Time, as_schedule

__all__ = ["Layout", "plan_layout", "resolve_layout", "plan_schedule", "default_outer_sigmas",
           "outer_timesteps_at_sigmas", "vanilla_baseline", "DEFAULT_FRAME_FRACTIONS", "DEFAULT_OUTER_SIGMAS"]


class Layout(NamedTuple):
    """A complete nested layout: the keyword arguments of :func:`~nested_diffusion.nested_sample`, and the
    NFEs it spends (``nfe``: each inner run costs the length of its grid on the schedule it was made for).
    ``inner_spacing``: the grid spacing of each inner run (``None``: the schedule's own)."""

    outer_timesteps: list[Time]
    inner_steps: list[int]
    inner_sampler: str
    inner_eta: float | tuple[float, ...] | None
    outer_update: str
    outer_eta: float | None
    nfe: int
    inner_spacing: tuple[str | None, ...] | None = None

    def session_kwargs(self) -> dict[str, Any]:
        kwargs = dict(outer_timesteps=list(self.outer_timesteps), inner_steps=list(self.inner_steps),
                      inner_sampler=self.inner_sampler,
                      inner_eta=list(self.inner_eta) if isinstance(self.inner_eta, tuple) else self.inner_eta,
                      outer_update=self.outer_update)
        if self.outer_eta is not None:
            kwargs["outer_eta"] = self.outer_eta
        if self.inner_spacing is not None:
            kwargs["inner_spacing"] = list(self.inner_spacing)
        return kwargs

    def checkpoints(self, schedule: Schedule | Any) -> list[int]:
        """Cumulative NFEs after each frame on ``schedule``."""
        _, grids = nested_grids(schedule, self.inner_steps, self.outer_timesteps, inner_spacing=self.inner_spacing)
        return list(itertools.accumulate(len(grid) for grid in grids))


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"budget must be a positive integer number of NFEs, got {budget!r}")
    return budget


def plan_schedule(budget: int, fractions: Sequence[float] = DEFAULT_FRAME_FRACTIONS, *,
                  max_steps: int | None = None) -> list[int]:
    """Inner step counts, one per outer step, so that frames arrive at ``fractions`` of ``budget``.

    100 NFEs → 10, 10, 10, 20, 25, 25 (frames at 10, 20, 30, 50, 75 and 100 NFEs). Fractions that
    round to an already reached NFE count are dropped, so small budgets give fewer outer steps; the
    counts sum to ``budget`` (each capped at ``max_steps``, the schedule's ``max_steps``).
    """
    _check_budget(budget)
    fractions = list(fractions)
    if not fractions or any(not 0 < f <= 1 for f in fractions) or fractions != sorted(fractions) or fractions[-1] != 1:
        raise ValueError(f"fractions must increase within (0, 1] and end at 1, got {fractions}")
    inner, reached = [], 0
    for f in fractions:
        target = max(1, round(budget * f))
        if target > reached:
            inner.append(target - reached if max_steps is None else min(target - reached, max_steps))
            reached = target
    return inner


def outer_timesteps_at_sigmas(schedule: Schedule | Any, sigmas: Sequence[float],
                              start: Time | None = None) -> list[Time]:
    """Outer grid ``[start, τ_2, …]`` (``start`` default: the top of the schedule) with τ_k the largest time
    whose noise level σ/α (√((1-ᾱ)/ᾱ) on a VP schedule, σ/(1-σ) on a flow one) is at most ``sigmas[k-2]``,
    kept strictly decreasing (so a schedule too short for every level gives fewer outer steps, and levels
    above a lower ``start`` — an edit's — sit just below it).

    Noise levels, not timesteps, are what a layout transfers between schedules: the same level 1 is
    t = 258 on the linear schedule, 353 on scaled-linear, 495 on cosine and σ = 0.5 (t = 500) on any flow
    schedule, whatever its shift."""
    schedule = as_schedule(schedule)
    outer: list[Time] = [schedule.top if start is None else start]
    for s in sigmas:
        if not (isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 and math.isfinite(s)):
            raise ValueError(f"sigmas must be positive noise levels, got {list(sigmas)}")
        t = schedule.at_noise_level(s)
        if t >= outer[-1]:
            t = schedule.below(outer[-1])
            if t is None:
                break
        outer.append(t)
    return outer


def default_outer_sigmas(budget: int) -> tuple[float, ...]:
    """The measured restart noise levels for ``budget``: the :data:`DEFAULT_OUTER_SIGMAS` entry of the
    largest reference budget not above it (the smallest reference budget's below all of them)."""
    references = sorted(DEFAULT_OUTER_SIGMAS)
    return DEFAULT_OUTER_SIGMAS[max([b for b in references if b <= budget], default=references[0])]


def _fit_runs(schedule: Schedule, outer: list[Time], inner: list[int]) -> list[Time]:
    """Raise restarts too low for their run: a run of M steps from τ costs at most ``capacity(τ)`` NFEs
    (τ + 1 on a discrete VP schedule), so each τ_k (k ≥ 2) is raised to at least ``lowest_start(M_k)``
    (M_k - 1) — the budget is spent — keeping the grid strictly decreasing below the top. Of the measured
    budgets only scaled-linear at 100 NFEs moves (its last restart from t = 20 to 24); far larger budgets
    restart higher (1,000 NFEs on linear: near σ = 1). Continuous (flow) grids never move."""
    taus = list(outer)
    for k in range(len(taus) - 1, 0, -1):
        floor = schedule.lowest_start(inner[k])
        if k + 1 < len(taus) and schedule.capacity(taus[k + 1]) < math.inf:
            floor = max(floor, taus[k + 1] + 1)
        taus[k] = max(taus[k], floor)
    for k in range(1, len(taus)):
        if taus[k] >= taus[k - 1]:
            taus[k] = schedule.below(taus[k - 1])
    return taus


def plan_layout(budget: int, schedule: Schedule | Any, *, fractions: Sequence[float] = DEFAULT_FRAME_FRACTIONS,
                sigmas: Sequence[float] | None = None, start: Time | None = None) -> Layout:
    """The project default layout for ``budget`` NFEs on a model with noise ``schedule`` (a
    :class:`~nested_diffusion.schedules.Schedule`, or a 1-D ᾱ table).

    Frames at ``fractions`` of the budget (:func:`plan_schedule`: 100 NFEs → inner runs of 10, 10,
    10, 20, 25, 25); the first inner run starts at the top of the schedule, each later one from the
    previous frame re-noised (``outer_update="renoise"``) to the noise levels ``sigmas`` (default
    :func:`default_outer_sigmas` of the budget), mapped to the schedule's own times by
    :func:`outer_timesteps_at_sigmas`; DPM-Solver++(2M) inner runs with η = 0.85. Measured in
    BENCHMARKS.md §8. ``start`` is the first outer time instead of the top (an edit's strength level).
    """
    _check_budget(budget)
    schedule = as_schedule(schedule)
    inner = plan_schedule(budget, fractions, max_steps=schedule.max_steps)
    levels = default_outer_sigmas(budget) if sigmas is None else sigmas
    outer = outer_timesteps_at_sigmas(schedule, list(levels)[:len(inner) - 1], start)
    inner = inner[:len(outer)]
    outer = _fit_runs(schedule, outer, inner)
    return _layout(schedule, outer, inner, DEFAULT_INNER_SAMPLER, DEFAULT_INNER_ETA, DEFAULT_OUTER_UPDATE, None)


def _layout(schedule: Schedule, outer: list[Time], inner: list[int], inner_sampler: str, inner_eta: Any,
            outer_update: str, outer_eta: float | None) -> Layout:
    eta = tuple(inner_eta) if isinstance(inner_eta, (list, tuple)) else inner_eta
    nfe = sum(len(schedule.inner_timesteps(tau, m)) for tau, m in zip(outer, inner))
    return Layout(list(outer), list(inner), inner_sampler, eta, outer_update, outer_eta, nfe)


def resolve_layout(schedule: Schedule | Any, *, budget: int | None = None, outer_steps: int | None = None,
                   inner_steps: int | Sequence[int] | None = None, outer_timesteps: Sequence[Time] | None = None,
                   inner_sampler: str | None = None, inner_eta: float | Sequence[float] | None = None,
                   outer_update: str | None = None, outer_eta: float | None = None,
                   start: Time | None = None) -> Layout:
    """The complete layout for what a user asked for on ``schedule`` — the one rule behind
    :class:`~nested_diffusion.NestedPipeline`, ``generate``, ``evaluate``, the studio and restoration.

    The grid, by what is given:

    * nothing of it (no ``outer_steps``, ``inner_steps`` or ``outer_timesteps``): :func:`plan_layout` for
      ``budget`` (default :data:`~nested_diffusion.defaults.DEFAULT_BUDGET`, 100) and this schedule, from
      ``start`` (an edit's first time) instead of the top when given;
    * ``inner_steps`` as one count per outer step: that many outer steps (``outer_steps``, if given, must
      agree);
    * ``outer_timesteps``: one outer step per time, ``inner_steps`` (default 10) each;
    * one count and a ``budget``: the other is ``budget // count`` (at least 1; the count must fit the budget);
    * one count alone: the other is :data:`~nested_diffusion.defaults.DEFAULT_STEPS` (10, the paper's 10 × 10);
    * both counts: as given (``budget`` then only caps how far a run goes).

    Outer times not given are the schedule's vanilla grid; the samplers, by what is given: an explicit
    ``inner_sampler`` / ``inner_eta`` / ``outer_update`` replaces the plan's or the default's (inner
    DPM-Solver++(2M), η 0.85; outer step: the plan's renoising step, otherwise the paper's DDIM step).
    ``outer_eta`` is the η of a DDIM outer step: with a renoising outer step (the plan's, or asked for) it
    is an error, not a silent switch — give ``outer_update="ddim"`` with it.
    """
    schedule = as_schedule(schedule)
    if budget is not None:
        _check_budget(budget)
    grid_given = outer_steps is not None or inner_steps is not None or outer_timesteps is not None
    if start is not None and grid_given:
        raise ValueError("start is the first time of a planned layout; with outer_steps / inner_steps give the "
                         "outer_timesteps themselves")
    if not grid_given:
        plan = plan_layout(DEFAULT_BUDGET if budget is None else budget, schedule, start=start)
        outer, inner = plan.outer_timesteps, plan.inner_steps
        default_update = plan.outer_update
    else:
        default_update = "ddim"
        if outer_timesteps is not None:
            outer = schedule.check_times(outer_timesteps, "outer_timesteps")
            if outer_steps is not None and outer_steps != len(outer):
                raise ValueError(f"outer_steps ({outer_steps}) must equal len(outer_timesteps) ({len(outer)}), "
                                 "or be left out")
            count = DEFAULT_STEPS if inner_steps is None else inner_steps
            inner = list(count) if isinstance(count, (list, tuple)) else [count] * len(outer)
            if len(inner) != len(outer):
                raise ValueError(f"inner_steps lists {len(inner)} counts but outer_timesteps has {len(outer)}: "
                                 "give one inner count per outer step")
        else:
            outer_count, inner = _counts(outer_steps, inner_steps, budget)
            outer = schedule.timesteps(_positive(outer_count, "outer_steps", schedule))
            inner = inner if isinstance(inner, list) else [inner] * len(outer)
    for m in inner:
        _positive(m, "inner_steps", schedule)
    update = default_update if outer_update is None else outer_update
    if update == "renoise" and outer_eta is not None:
        raise ValueError(f"outer_eta ({outer_eta}) is the η of the DDIM outer step, but the outer step re-noises"
                         + (" (the planned default)" if outer_update is None else "")
                         + ": give outer_update='ddim' with it, or leave outer_eta out")
    if update == "ddim" and outer_eta is None:
        outer_eta = DEFAULT_OUTER_ETA
    sampler = DEFAULT_INNER_SAMPLER if inner_sampler is None else inner_sampler
    eta = (DEFAULT_INNER_ETA if inner_sampler is None else None) if inner_eta is None else inner_eta
    return _layout(schedule, outer, inner, sampler, eta, update, outer_eta)


def vanilla_baseline(schedule: Schedule | Any) -> tuple[str, float]:
    """The vanilla sampler whose x̂0 previews a user of this kind of model sees, ``(sampler, η)``: DDIM with
    η = 1 (DDPM-like ancestral sampling, the measured VP baseline of BENCHMARKS.md) on VP schedules; on flow
    schedules Euler on the velocity (DDIM η = 0), what SD3/Flux pipelines run."""
    return ("ddim", 0.0) if as_schedule(schedule).default_prediction_type == "flow" else ("ddim", 1.0)


def _positive(value: Any, name: str, schedule: Schedule) -> int:
    from .session import check_steps

    return check_steps(value, name, schedule)


def _counts(outer_steps: int | None, inner_steps: int | Sequence[int] | None,
            budget: int | None) -> tuple[Any, Any]:
    """``(outer count, inner count or counts)`` from the counts given (at least one) and an optional budget."""
    if isinstance(inner_steps, (list, tuple)):
        inner = list(inner_steps)
        if outer_steps is not None and outer_steps != len(inner):
            raise ValueError(f"inner_steps lists {len(inner)} counts but outer_steps is {outer_steps}: "
                             "give one inner count per outer step")
        return len(inner), inner
    if budget is not None:
        if isinstance(inner_steps, int) and not isinstance(inner_steps, bool) and inner_steps > budget:
            raise ValueError(f"budget {budget} is smaller than one outer step (inner_steps = {inner_steps} NFEs)")
        if outer_steps is None and isinstance(inner_steps, int):
            outer_steps = max(1, budget // inner_steps)
        if inner_steps is None and isinstance(outer_steps, int):
            inner_steps = max(1, budget // outer_steps)
    return (DEFAULT_STEPS if outer_steps is None else outer_steps), (DEFAULT_STEPS if inner_steps is None else inner_steps)
