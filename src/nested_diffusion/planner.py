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
                       DEFAULT_OUTER_ETA, DEFAULT_OUTER_UPDATE, DEFAULT_STEPS, PLAN_INNER_SAMPLER,
                       PLAN_FIRST_RESTART_LEVEL, PLAN_GRID_END, PLAN_LOGSNR_MAX_NOISE, PLAN_LOGSNR_MIN_RESTART,
                       PLAN_MIN_RUN, PLAN_MIN_RUN_BUDGET, PLAN_RESTART_LEVEL)
from .nested import _per_step, nested_grids
from .schedules import Schedule, Time, as_schedule

__all__ = ["Layout", "plan_layout", "resolve_layout", "plan_schedule", "plan_frames", "default_outer_sigmas",
           "restart_noise_level", "outer_timesteps_at_sigmas", "vanilla_baseline", "DEFAULT_FRAME_FRACTIONS"]


class Layout(NamedTuple):
    """A complete nested layout: the keyword arguments of :func:`~nested_diffusion.nested_sample`, and the
    NFEs it spends (``nfe``: each inner run costs the length of its grid on the schedule it was made for).
    ``inner_spacing``: the grid spacing of each inner run (``None``: the schedule's own); ``inner_grid_end``: the
    noise level σ/α where their Karras and log-SNR grids end (``None``: the schedule's own end)."""

    outer_timesteps: list[Time]
    inner_steps: list[int]
    inner_sampler: str
    inner_eta: float | tuple[float, ...] | None
    outer_update: str
    outer_eta: float | None
    nfe: int
    inner_spacing: tuple[str | None, ...] | None = None
    inner_grid_end: float | None = None

    def session_kwargs(self) -> dict[str, Any]:
        kwargs = dict(outer_timesteps=list(self.outer_timesteps), inner_steps=list(self.inner_steps),
                      inner_sampler=self.inner_sampler,
                      inner_eta=list(self.inner_eta) if isinstance(self.inner_eta, tuple) else self.inner_eta,
                      outer_update=self.outer_update)
        if self.outer_eta is not None:
            kwargs["outer_eta"] = self.outer_eta
        if self.inner_spacing is not None:
            kwargs["inner_spacing"] = list(self.inner_spacing)
        if self.inner_grid_end is not None:
            kwargs["inner_grid_end"] = self.inner_grid_end
        return kwargs

    def checkpoints(self, schedule: Schedule | Any) -> list[int]:
        """Cumulative NFEs after each frame on ``schedule``."""
        _, grids = nested_grids(schedule, self.inner_steps, self.outer_timesteps, inner_spacing=self.inner_spacing,
                                inner_grid_end=self.inner_grid_end)
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


def plan_frames(budget: int, fractions: Sequence[float] = DEFAULT_FRAME_FRACTIONS, *,
                max_steps: int | None = None, min_run: int = PLAN_MIN_RUN) -> list[int]:
    """The planned default's inner step counts: :func:`plan_schedule`'s frames, keeping the first and every
    later one whose run has at least ``min_run`` NFEs (a shorter run merges into the next one; the last
    frame is always at the budget).

    Fewer, better frames at small budgets: 20 NFEs → 2, 8, 10 (frames at 2, 10, 20 NFEs), 30 → 3, 12, 15,
    50 → 5, 10, 10, 13, 12; from 80 NFEs on every run has ``min_run`` steps and all six frames stay
    (100 → 10, 10, 10, 20, 25, 25). A frame at a few NFEs is worth less than the NFEs it costs the next one
    (BENCHMARKS.md §12). Below :data:`~nested_diffusion.defaults.PLAN_MIN_RUN_BUDGET` (20) NFEs, where it
    was not measured, the whole ladder stays (:func:`plan_schedule`)."""
    if isinstance(min_run, bool) or not isinstance(min_run, int) or min_run < 1:
        raise ValueError(f"min_run must be a positive integer number of NFEs, got {min_run!r}")
    ends = list(itertools.accumulate(plan_schedule(budget, fractions, max_steps=max_steps)))
    if budget < PLAN_MIN_RUN_BUDGET:
        return [b - a for a, b in zip([0] + ends, ends)]
    kept = ends[:1]
    for end in ends[1:]:
        if end - kept[-1] >= min_run:
            kept.append(end)
    if kept[-1] != ends[-1]:  # the tail is too short for a run of its own: the last kept run takes it
        if len(kept) > 1:
            kept[-1] = ends[-1]
        else:
            kept.append(ends[-1])
    inner = [b - a for a, b in zip([0] + kept, kept)]
    if max_steps is not None and max(inner) > max_steps:  # merged runs too long for the schedule: keep the ladder
        return plan_schedule(budget, fractions, max_steps=max_steps)
    return inner


def restart_noise_level(spent: int, level: Sequence[float] = PLAN_RESTART_LEVEL) -> float:
    """The planned restart's noise level σ/α after ``spent`` NFEs: σ = a · spent^(-p) clipped to [lo, hi],
    ``level = (a, p, lo, hi)`` (:data:`~nested_diffusion.defaults.PLAN_RESTART_LEVEL`).

    A restart at σ redoes every scale below σ and keeps the frame's coarser ones: the better the frame, the
    lower the restart, where the next run's steps fix the fine detail (BENCHMARKS.md §12; the plan's first
    restart goes higher, :func:`_restart_levels`)."""
    a, p, lo, hi = level
    if isinstance(spent, bool) or not isinstance(spent, int) or spent < 1:
        raise ValueError(f"spent must be a positive number of NFEs, got {spent!r}")
    return min(hi, max(lo, a * spent ** -p))


def default_outer_sigmas(budget: int, schedule: Schedule | Any = None) -> tuple[float, ...]:
    """The planned restart noise levels for ``budget``: :func:`restart_noise_level` after each frame of
    :func:`plan_frames` but the last (one level per outer step after the first)."""
    _check_budget(budget)
    max_steps = None if schedule is None else as_schedule(schedule).max_steps
    return tuple(_restart_levels(plan_frames(budget, max_steps=max_steps)))


def _restart_levels(inner: Sequence[int]) -> list[float]:
    """The restart level before each run after the first: :func:`restart_noise_level` of the NFEs spent, the
    first at least ``restart_noise_level(n, PLAN_FIRST_RESTART_LEVEL)``: a first frame made with a few NFEs is
    wrong at coarse scales that a low restart keeps (8 after 2-4 NFEs instead of 4.5, 7 after 5 instead of 3;
    from 10 NFEs on the plain level)."""
    spent = list(itertools.accumulate(inner[:-1]))
    levels = [restart_noise_level(n) for n in spent]
    if levels:
        levels[0] = max(levels[0], restart_noise_level(spent[0], PLAN_FIRST_RESTART_LEVEL))
    return levels


def _plan_spacings(schedule: Schedule, outer: Sequence[Time], inner: list[int]) -> tuple[str, ...]:
    """The grids of the planned runs, on any schedule: the first run uniform in log-SNR where its start's
    noise level is at most :data:`~nested_diffusion.defaults.PLAN_LOGSNR_MAX_NOISE` and it has 3 steps or
    more, otherwise the schedule's own grid (trailing on VP; a flow schedule's top, σ = 1, has no finite
    level); a restart uniform in log-SNR from a level of at least
    :data:`~nested_diffusion.defaults.PLAN_LOGSNR_MIN_RESTART`, else on a Karras grid (ρ = 7)."""
    noise = [schedule.level(t).noise for t in outer]
    head = "logsnr" if inner[0] >= 3 and noise[0] <= PLAN_LOGSNR_MAX_NOISE else schedule.spacing
    return (head,) + tuple("logsnr" if s >= PLAN_LOGSNR_MIN_RESTART else "karras" for s in noise[1:])


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
                sigmas: Sequence[float] | None = None, start: Time | None = None,
                min_run: int = PLAN_MIN_RUN) -> Layout:
    """The project default layout for ``budget`` NFEs on a model with noise ``schedule`` (a
    :class:`~nested_diffusion.schedules.Schedule`, or a 1-D ᾱ table).

    Frames on the ``fractions`` ladder of the budget, keeping those whose run has ``min_run`` NFEs or more
    (:func:`plan_frames`: 20 NFEs → runs of 2, 8, 10; 100 → 10, 10, 10, 20, 25, 25; ``min_run=1`` keeps every
    fraction); the first inner run starts at the top of the schedule (or ``start``, an edit's strength level),
    each later one from the previous frame re-noised (``outer_update="renoise"``) to the noise level
    ``sigmas`` (default :func:`restart_noise_level` of the NFEs spent so far, the first restart higher after a
    short first run: :func:`_restart_levels`), mapped to the schedule's own
    times by :func:`outer_timesteps_at_sigmas`. Every inner run is UniPC (bh2), on a grid uniform in log-SNR
    where its start allows and for high restarts, else the schedule's own (the first run) or Karras
    (:func:`_plan_spacings`); those grids end at σ/α = :data:`~nested_diffusion.defaults.PLAN_GRID_END`.
    Measured in BENCHMARKS.md §12 (and §8 for the restarts' design).
    """
    _check_budget(budget)
    schedule = as_schedule(schedule)
    inner = plan_frames(budget, fractions, max_steps=schedule.max_steps, min_run=min_run)
    if sigmas is None:
        sigmas = _restart_levels(inner)
    outer = outer_timesteps_at_sigmas(schedule, list(sigmas)[:len(inner) - 1], start)
    inner = inner[:len(outer)]
    outer = _fit_runs(schedule, outer, inner)
    return _layout(schedule, outer, inner, PLAN_INNER_SAMPLER, None, DEFAULT_OUTER_UPDATE, None,
                   _plan_spacings(schedule, outer, inner), PLAN_GRID_END)


def _layout(schedule: Schedule, outer: list[Time], inner: list[int], inner_sampler: str, inner_eta: Any,
            outer_update: str, outer_eta: float | None, spacing: tuple[str | None, ...] | None = None,
            grid_end: float | None = None) -> Layout:
    eta = tuple(inner_eta) if isinstance(inner_eta, (list, tuple)) else inner_eta
    spacing = None if spacing is None else tuple(spacing)
    grids = nested_grids(schedule, inner, outer, inner_spacing=spacing, inner_grid_end=grid_end)[1]
    nfe = sum(len(grid) for grid in grids)
    return Layout(list(outer), list(inner), inner_sampler, eta, outer_update, outer_eta, nfe, spacing, grid_end)


def resolve_layout(schedule: Schedule | Any, *, budget: int | None = None, outer_steps: int | None = None,
                   inner_steps: int | Sequence[int] | None = None, outer_timesteps: Sequence[Time] | None = None,
                   inner_sampler: str | None = None, inner_eta: float | Sequence[float] | None = None,
                   outer_update: str | None = None, outer_eta: float | None = None,
                   start: Time | None = None,
                   inner_spacing: str | Sequence[str | None] | None = None,
                   inner_grid_end: float | None = None) -> Layout:
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
    ``inner_sampler`` / ``inner_eta`` / ``outer_update`` replaces the plan's (UniPC inner runs on the plan's
    grids, renoising outer step) or the default's (inner DPM-Solver++(2M), η 0.85, on the schedule's grid;
    the paper's DDIM outer step); an ``inner_eta`` alone runs the default sampler with it on the plan's grids.
    ``outer_eta`` is the η of a DDIM outer step: with a renoising outer step (the plan's, or asked for) it
    is an error, not a silent switch — give ``outer_update="ddim"`` with it. ``inner_spacing`` (a spacing
    name, or one per outer step) grids the inner runs of any layout, the plan's included; by default the
    plan's spacings (:func:`_plan_spacings`) or, for a layout given, the schedule's own grid. ``inner_grid_end``
    (a noise level σ/α) ends their Karras and log-SNR grids; by default the plan's
    (:data:`~nested_diffusion.defaults.PLAN_GRID_END`) or the schedule's own end.
    """
    schedule = as_schedule(schedule)
    if budget is not None:
        _check_budget(budget)
    grid_given = outer_steps is not None or inner_steps is not None or outer_timesteps is not None
    if start is not None and grid_given:
        raise ValueError("start is the first time of a planned layout; with outer_steps / inner_steps give the "
                         "outer_timesteps themselves")
    plan = None
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
    if plan is not None and inner_sampler is None and inner_eta is None:
        sampler, eta = plan.inner_sampler, plan.inner_eta
    else:
        sampler = DEFAULT_INNER_SAMPLER if inner_sampler is None else inner_sampler
        eta = (DEFAULT_INNER_ETA if inner_sampler is None else None) if inner_eta is None else inner_eta
    if inner_spacing is not None:
        spacing = tuple(_per_step(inner_spacing, len(outer)))
    else:
        spacing = None if plan is None else plan.inner_spacing
    if inner_grid_end is None and plan is not None:
        inner_grid_end = plan.inner_grid_end
    return _layout(schedule, outer, inner, sampler, eta, update, outer_eta, spacing, inner_grid_end)


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
