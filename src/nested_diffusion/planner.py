"""Choosing outer × inner steps for an NFE budget."""

from __future__ import annotations

import math
from typing import NamedTuple

from .defaults import DEFAULT_INNER_EXPONENT

__all__ = ["Plan", "plan_steps", "DEFAULT_INNER_EXPONENT"]



class Plan(NamedTuple):
    outer_steps: int
    inner_steps: int

    @property
    def nfe(self) -> int:
        """Upper bound on the NFEs spent (exact when every outer timestep τ >= inner_steps - 1)."""
        return self.outer_steps * self.inner_steps


def plan_steps(budget: int, inner_exponent: float = DEFAULT_INNER_EXPONENT, *, max_steps: int = 1000) -> Plan:
    """Outer and inner step counts for a total budget of ``budget`` NFEs.

    Rule: ``inner_steps = round(budget ** inner_exponent)`` (at least 1), ``outer_steps =
    budget // inner_steps`` — so ``outer × inner <= budget``. ``inner_exponent = 0.5`` is the
    paper's square layout (100 → 10 × 10); 0 gives vanilla DDIM (``inner_steps = 1``).
    ``max_steps`` (the number of training timesteps) caps both counts.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise ValueError(f"budget must be a positive integer number of NFEs, got {budget!r}")
    if not 0.0 <= inner_exponent <= 1.0:
        raise ValueError(f"inner_exponent must lie in [0, 1], got {inner_exponent}")
    inner = min(max(1, round(budget ** inner_exponent)), budget, max_steps)
    outer = min(budget // inner, max_steps)
    return Plan(outer, inner)
