"""Choosing outer × inner steps for an NFE budget."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from .defaults import DEFAULT_BUDGET, DEFAULT_FRAME_FRACTIONS, DEFAULT_INNER_EXPONENT

__all__ = ["Plan", "plan_steps", "plan_schedule", "resolve_layout", "DEFAULT_INNER_EXPONENT",
           "DEFAULT_FRAME_FRACTIONS"]

#: outer or inner step count used when only the other one is given (the paper's 10 × 10)
DEFAULT_STEPS = 10

class Plan(NamedTuple):
    outer_steps: int
    inner_steps: int

    @property
    def nfe(self) -> int:
        """Upper bound on the NFEs spent (exact when every outer timestep τ >= inner_steps - 1)."""
        return self.outer_steps * self.inner_steps


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

    The project default (BENCHMARKS.md §5): inner runs grow with the outer step, so the first
    frames come early and the last inner runs are long, accurate solves — 100 NFEs → 10, 10, 10,
    20, 25, 25 (frames at 10, 20, 30, 50, 75 and 100 NFEs). Fractions that round to an already
    reached NFE count are dropped, so small budgets give fewer outer steps; the counts sum to
    ``budget`` (each capped at ``max_steps``).
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
