"""Anytime restoration: nested diffusion whose outer step is the DDRM update (PAPER.md, "Inverse
problems") and whose inner runs are DDRM restorations started from the outer state."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..defaults import (DEFAULT_DDRM_ETA_B, DEFAULT_INNER_SAMPLER, DEFAULT_RESTORE_INNER_ETA, DEFAULT_RESTORE_INNER_GRID_POWER, DEFAULT_RESTORE_OUTER_ETA)
from ..nested import NestedSession, nested_grids
from ..planner import resolve_layout
from ..session import Model
from .ddrm import DDRM, InverseProblem, check_eta, check_grid_power
from .operators import LinearOperator

__all__ = ["NestedRestoreSession", "nested_restore", "INNER_KINDS"]

#: ``inner=``: "ddrm" (the default: inner runs restore too) or "unconditional" (the author's later PSC
#: design: an unconditional inner sampler, the measurement enters only through the outer step).
INNER_KINDS = ("ddrm", "unconditional")


class NestedRestoreSession(NestedSession):
    """Nested DDRM as a resumable iterator of frames, one per outer step.

    Starts from DDRM's x_T' given y at the first outer timestep. Outer step k at τ: (1) the inner
    run from x_τ down to t = 0 on ``spaced_timesteps(τ, M)`` (``min(M, τ+1)`` NFEs) — DDRM with
    η = ``eta`` (or, ``inner="unconditional"``, the project's unconditional inner sampler
    DPM-Solver++(2M) with η = ``eta``); its output x̂0' is the frame's image; (2) the DDRM update from
    τ to τ' with x̂0' as x̂0 and η = ``outer_eta`` (no NFE). The last frame is the last inner output.

    With ``inner_steps=1`` and σ_y > 0 this is exactly :class:`DDRMSession` with ``outer_steps``
    steps and η = ``outer_eta`` (the inner run's x̂0' is the network's x̂0).
    """

    batch_state = ("x", "problem", "inner_sampler", "outer_sampler")  # fork(indices=) picks measurements too

    def __init__(self, model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *,
                 operator: LinearOperator, measurement: torch.Tensor, sigma_y: float,
                 prediction_type: str = "epsilon", outer_steps: int | None = None,
                 inner_steps: int | Sequence[int] | None = None, inner: str = "ddrm",
                 eta: float = DEFAULT_RESTORE_INNER_ETA, eta_b: float = DEFAULT_DDRM_ETA_B,
                 outer_eta: float | None = None, inner_grid_power: float = DEFAULT_RESTORE_INNER_GRID_POWER,
                 generator: torch.Generator | None = None, model_kwargs: dict[str, Any] | None = None) -> None:
        if inner not in INNER_KINDS:
            raise ValueError(f"inner must be one of {INNER_KINDS}, got {inner!r}")
        eta, eta_b = check_eta(eta, "eta"), check_eta(eta_b, "eta_b")
        outer_eta = check_eta(DEFAULT_RESTORE_OUTER_ETA if outer_eta is None else outer_eta, "outer_eta")
        inner_grid_power = check_grid_power(inner_grid_power, "inner_grid_power")
        outer_steps, inner_steps = resolve_layout(outer_steps, inner_steps)
        super().__init__(model, alphas_cumprod, noise, prediction_type=prediction_type, outer_steps=outer_steps,
                         inner_steps=inner_steps, inner_sampler=DEFAULT_INNER_SAMPLER, inner_eta=eta,
                         outer_eta=outer_eta, generator=generator, model_kwargs=model_kwargs)
        self.inner, self.inner_grid_power = inner, inner_grid_power
        self.outer_timesteps, self._inner_grids = nested_grids(self.num_train_timesteps, self.num_steps,
                                                               self.inner_steps, inner_grid_power)
        self.problem = InverseProblem(operator, measurement, sigma_y, self.x)
        self.outer_sampler = DDRM(self.problem, outer_eta, eta_b)
        if inner == "ddrm":
            self.inner_sampler = DDRM(self.problem, eta, eta_b)
        self.x = self.problem.initial_state(self.x, self.alphas_cumprod[self.outer_timesteps[0]])


def nested_restore(model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *, operator: LinearOperator,
                   measurement: torch.Tensor, sigma_y: float, prediction_type: str = "epsilon",
                   outer_steps: int | None = None, inner_steps: int | Sequence[int] | None = None,
                   inner: str = "ddrm", eta: float = DEFAULT_RESTORE_INNER_ETA, eta_b: float = DEFAULT_DDRM_ETA_B,
                   outer_eta: float | None = None, inner_grid_power: float = DEFAULT_RESTORE_INNER_GRID_POWER,
                   generator: torch.Generator | None = None,
                   model_kwargs: dict[str, Any] | None = None) -> NestedRestoreSession:
    """Anytime restoration of ``measurement`` = H x + σ_y n (one per item of ``noise``); iterate for
    one :class:`~nested_diffusion.Frame` per outer step, each a measurement-consistent restoration.

    Layout as everywhere (:func:`~nested_diffusion.planner.resolve_layout`): with neither count the
    project's growing layout ``plan_schedule(100)`` (inner steps 10, 10, 10, 20, 25, 25), measured for
    restoration too (BENCHMARKS.md §6). η, outer η and the inner grid default to the measured
    ``DEFAULT_RESTORE_*`` values in :mod:`nested_diffusion.defaults`. See :class:`NestedRestoreSession`.
    Everything is validated here, before any network call.
    """
    return NestedRestoreSession(model, alphas_cumprod, noise, operator=operator, measurement=measurement,
                                sigma_y=sigma_y, prediction_type=prediction_type, outer_steps=outer_steps,
                                inner_steps=inner_steps, inner=inner, eta=eta, eta_b=eta_b, outer_eta=outer_eta,
                                inner_grid_power=inner_grid_power, generator=generator, model_kwargs=model_kwargs)
