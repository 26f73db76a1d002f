"""Choosing the nested layout for an NFE budget and the model's own noise schedule."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

from .defaults import (DEFAULT_BUDGET, DEFAULT_FRAME_FRACTIONS, DEFAULT_INNER_ETA, DEFAULT_INNER_EXPONENT,
                       DEFAULT_INNER_SAMPLER, DEFAULT_OUTER_ETA, DEFAULT_OUTER_SIGMAS, DEFAULT_OUTER_UPDATE)

__all__ = ["Plan", "Layout", "plan_steps", "plan_schedule", "plan_layout", "default_outer_sigmas",
           "outer_timesteps_at_sigmas",
           "resolve_layout", "plan_session", "DEFAULT_INNER_EXPONENT", "DEFAULT_FRAME_FRACTIONS",
           "DEFAULT_OUTER_SIGMAS"]

#: outer or inner step count used when only the other one is given (the paper's 10 × 10)
DEFAULT_STEPS = 10

class Plan(NamedTuple):
    outer_steps: int
    inner_steps: int

    @property
    def nfe(self) -> int:
        """Upper bound on the NFEs spent (exact when every outer timestep τ >= inner_steps - 1)."""
        return self.outer_steps * self.inner_steps


class Layout(NamedTuple):
    """A complete nested layout: the keyword arguments of :func:`~nested_diffusion.nested_sample`."""

    outer_timesteps: list[int]
    inner_steps: list[int]
    inner_sampler: str
    inner_eta: float | tuple[float, ...]
    outer_update: str
    outer_eta: float

    @property
    def nfe(self) -> int:
        """NFEs spent: an inner run from τ costs min(M, τ + 1)."""
        return sum(min(m, tau + 1) for tau, m in zip(self.outer_timesteps, self.inner_steps))

    def session_kwargs(self) -> dict[str, Any]:
        return dict(outer_timesteps=list(self.outer_timesteps), inner_steps=list(self.inner_steps),
                    inner_sampler=self.inner_sampler,
                    inner_eta=list(self.inner_eta) if isinstance(self.inner_eta, tuple) else self.inner_eta,
                    outer_update=self.outer_update,
                    outer_eta=self.outer_eta)


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"budget must be a positive integer number of NFEs, got {budget!r}")
    return budget


def plan_steps(budget: int, inner_exponent: float = DEFAULT_INNER_EXPONENT, *, max_steps: int = 1000) -> Plan:
    """Outer and inner step counts for a total budget of ``budget`` NFEs.

    Rule: ``inner_steps = round(budget ** inner_exponent)`` (at least 1), ``outer_steps =
    budget // inner_steps`` — so ``outer × inner <= budget``. ``inner_exponent = 0.5`` is the
    paper's square layout (100 → 10 × 10); 0 gives vanilla DDIM (``inner_steps = 1``).
    ``max_steps`` (the number of training timesteps) caps both counts.
    """
    _check_budget(budget)
    if not 0.0 <= inner_exponent <= 1.0:
        raise ValueError(f"inner_exponent must lie in [0, 1], got {inner_exponent}")
    inner = min(max(1, round(budget ** inner_exponent)), budget, max_steps)
    outer = min(budget // inner, max_steps)
    return Plan(outer, inner)


def plan_schedule(budget: int, fractions: Sequence[float] = DEFAULT_FRAME_FRACTIONS, *,
                  max_steps: int = 1000) -> list[int]:
    """Inner step counts, one per outer step, so that frames arrive at ``fractions`` of ``budget``.

    100 NFEs → 10, 10, 10, 20, 25, 25 (frames at 10, 20, 30, 50, 75 and 100 NFEs). Fractions that
    round to an already reached NFE count are dropped, so small budgets give fewer outer steps; the
    counts sum to ``budget`` (each capped at ``max_steps``).
    """
    _check_budget(budget)
    fractions = list(fractions)
    if not fractions or any(not 0 < f <= 1 for f in fractions) or fractions != sorted(fractions) or fractions[-1] != 1:
        raise ValueError(f"fractions must increase within (0, 1] and end at 1, got {fractions}")
    inner, reached = [], 0
    for f in fractions:
        target = max(1, round(budget * f))
        if target > reached:
            inner.append(min(target - reached, max_steps))
            reached = target
    return inner


def outer_timesteps_at_sigmas(alphas_cumprod: Any, sigmas: Sequence[float]) -> list[int]:
    """Outer grid ``[T-1, τ_2, …]`` with τ_k the largest timestep whose noise level
    σ_t = √((1-ᾱ_t)/ᾱ_t) is at most ``sigmas[k-2]``, kept strictly decreasing (so a schedule too
    short for every level gives fewer outer steps).

    Noise levels, not timesteps, are what a layout transfers between training schedules: the same
    σ = 1 is t = 258 on the linear schedule, 353 on scaled-linear and 495 on cosine."""
    from .schedules import check_alphas_cumprod

    a = check_alphas_cumprod(alphas_cumprod)
    sigma_t = ((1 - a) / a).sqrt().tolist()  # non-decreasing in t
    outer = [len(sigma_t) - 1]
    for s in sigmas:
        if not (isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 and math.isfinite(s)):
            raise ValueError(f"sigmas must be positive noise levels, got {list(sigmas)}")
        t = max((i for i, v in enumerate(sigma_t) if v <= s), default=0)
        t = min(t, outer[-1] - 1)
        if t < 0:
            break
        outer.append(t)
    return outer


def plan_layout(budget: int, alphas_cumprod: Any, *, fractions: Sequence[float] = DEFAULT_FRAME_FRACTIONS,
                sigmas: Sequence[float] | None = None) -> Layout:
    """The project default layout for ``budget`` NFEs on a model trained with ``alphas_cumprod``.

    Frames at ``fractions`` of the budget (:func:`plan_schedule`: 100 NFEs → inner runs of 10, 10,
    10, 20, 25, 25); the first inner run starts at T-1, each later one from the previous frame
    re-noised (``outer_update="renoise"``) to the noise levels ``sigmas`` (default
    :func:`default_outer_sigmas` of the budget), mapped to the model's own timesteps by
    :func:`outer_timesteps_at_sigmas`; DPM-Solver++(2M) inner runs with η = 0.85. Measured in
    BENCHMARKS.md §8.
    """
    from .schedules import check_alphas_cumprod

    _check_budget(budget)
    a = check_alphas_cumprod(alphas_cumprod)
    inner = plan_schedule(budget, fractions, max_steps=len(a))
    levels = default_outer_sigmas(budget) if sigmas is None else sigmas
    outer = outer_timesteps_at_sigmas(a, list(levels)[:len(inner) - 1])
    inner = inner[:len(outer)]
    outer = _fit_runs(outer, inner)
    return Layout(outer, inner, DEFAULT_INNER_SAMPLER, DEFAULT_INNER_ETA, DEFAULT_OUTER_UPDATE, DEFAULT_OUTER_ETA)


def _fit_runs(outer: list[int], inner: list[int]) -> list[int]:
    """Raise restarts too low for their run: an inner run of M steps from τ costs min(M, τ + 1) NFEs,
    so each τ_k (k ≥ 2) is raised to at least M_k - 1 — the budget is spent — keeping the grid
    strictly decreasing below T-1. Of the measured budgets only scaled-linear at 100 NFEs moves (its
    last restart from t = 20 to 24); far larger budgets restart higher (1,000 NFEs on linear: near σ = 1)."""
    taus = list(outer)
    for k in range(len(taus) - 1, 0, -1):
        taus[k] = max(taus[k], inner[k] - 1, taus[k + 1] + 1 if k + 1 < len(taus) else 0)
    for k in range(1, len(taus)):
        taus[k] = min(taus[k], taus[k - 1] - 1)
    return taus


def default_outer_sigmas(budget: int) -> tuple[float, ...]:
    """The measured restart noise levels for ``budget``: the :data:`DEFAULT_OUTER_SIGMAS` entry of the
    largest reference budget not above it (the smallest reference budget's below all of them)."""
    references = sorted(DEFAULT_OUTER_SIGMAS)
    return DEFAULT_OUTER_SIGMAS[max([b for b in references if b <= budget], default=references[0])]


def resolve_layout(outer_steps: int | None = None, inner_steps: int | Sequence[int] | None = None,
                   budget: int | None = None) -> tuple[int, int | list[int]]:
    """The nested layout ``(outer_steps, inner_steps)`` a user asked for — the one rule behind
    ``generate``, ``evaluate``, :class:`~nested_diffusion.NestedPipeline` and the studio.

    * neither count: the project default, :func:`plan_schedule` of ``budget`` (default
      :data:`~nested_diffusion.defaults.DEFAULT_BUDGET`);
    * ``inner_steps`` as one count per outer step: ``outer_steps`` is their number;
    * one count and a ``budget``: the other is ``budget // count`` (at least 1);
    * one count alone: the other is 10 (the paper's 10 × 10).

    Counts are validated by the session that uses them; a given ``budget`` must fit one outer step.
    """
    if budget is not None:
        _check_budget(budget)
    if isinstance(inner_steps, (list, tuple)):
        inner = list(inner_steps)
        if outer_steps is not None and outer_steps != len(inner):
            raise ValueError(f"inner_steps lists {len(inner)} counts but outer_steps is {outer_steps}: "
                             "give one inner count per outer step")
        return len(inner), inner
    if outer_steps is None and inner_steps is None:
        inner = plan_schedule(DEFAULT_BUDGET if budget is None else budget)
        return len(inner), inner
    if budget is not None:
        if isinstance(inner_steps, int) and not isinstance(inner_steps, bool) and inner_steps > budget:
            raise ValueError(f"budget {budget} is smaller than one outer step (inner_steps = {inner_steps} NFEs)")
        if outer_steps is None:
            outer_steps = max(1, budget // inner_steps) if isinstance(inner_steps, int) else DEFAULT_STEPS
        if inner_steps is None:
            inner_steps = max(1, budget // outer_steps) if isinstance(outer_steps, int) else DEFAULT_STEPS
    return (DEFAULT_STEPS if outer_steps is None else outer_steps), (DEFAULT_STEPS if inner_steps is None else inner_steps)


def plan_session(alphas_cumprod: Any, *, outer_steps: int | None = None,
                 inner_steps: int | Sequence[int] | None = None, budget: int | None = None,
                 inner_sampler: str | None = None, inner_eta: float | Sequence[float] | None = None,
                 outer_eta: float | None = None, outer_timesteps: Sequence[int] | None = None,
                 outer_update: str | None = None) -> dict[str, Any]:
    """The :class:`~nested_diffusion.NestedSession` keyword arguments for what a user asked for on a
    model trained with ``alphas_cumprod`` — the rule behind ``generate``, ``evaluate`` and
    :class:`~nested_diffusion.NestedPipeline`.

    * no counts and no outer grid: :func:`plan_layout` for ``budget`` (default
      :data:`~nested_diffusion.defaults.DEFAULT_BUDGET`) and this schedule; an explicit
      ``inner_sampler``, ``inner_eta`` or ``outer_update`` replaces the plan's, and an explicit
      ``outer_eta`` selects the paper's DDIM outer step (unless ``outer_update`` says otherwise);
    * otherwise the counts of :func:`resolve_layout` (or, with ``outer_timesteps``, one outer step per
      timestep and 10 inner steps unless given), the DPM-Solver++(2M) inner sampler and a DDIM outer step
      unless given.
    """
    if outer_steps is None and inner_steps is None and outer_timesteps is None:
        layout = plan_layout(DEFAULT_BUDGET if budget is None else _check_budget(budget), alphas_cumprod).session_kwargs()
        if outer_eta is not None:
            layout.update(outer_eta=outer_eta, outer_update="ddim")
        for name, value in (("inner_sampler", inner_sampler), ("inner_eta", inner_eta), ("outer_update", outer_update)):
            if value is not None:
                layout[name] = value
        return layout
    if outer_timesteps is None:
        outer_steps, inner_steps = resolve_layout(outer_steps, inner_steps, budget)
    elif inner_steps is None:
        inner_steps = DEFAULT_STEPS
    return dict(outer_steps=outer_steps, inner_steps=inner_steps, outer_timesteps=outer_timesteps,
                inner_sampler=DEFAULT_INNER_SAMPLER if inner_sampler is None else inner_sampler, inner_eta=inner_eta,
                outer_eta=outer_eta, outer_update="ddim" if outer_update is None else outer_update)
