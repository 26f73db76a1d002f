"""Anytime restoration: nested diffusion whose outer step is the DDRM update (PAPER.md, "Inverse
problems") and whose inner runs are DDRM restorations started from the outer state."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..defaults import (DEFAULT_BUDGET, DEFAULT_DDRM_ETA_B, DEFAULT_INNER_SAMPLER, DEFAULT_RESTORE_INNER_ETA,
                        DEFAULT_RESTORE_INNER_GRID_POWER, DEFAULT_RESTORE_OUTER_ETA)
from ..nested import NestedSession
from ..planner import plan_schedule, resolve_layout
from ..samplers import make_sampler
from ..samplers.noise import Generator
from ..schedules import Schedule, as_schedule
from ..session import Model, check_noise
from .ddrm import DDRM, InverseProblem, Restoring, check_eta, check_grid_power
from .operators import LinearOperator

__all__ = ["NestedRestoreSession", "nested_restore", "INNER_KINDS"]

#: ``inner=``: "ddrm" (the default: inner runs restore too) or "unconditional" (the author's later PSC
#: design: an unconditional inner sampler, the measurement enters only through the outer step).
INNER_KINDS = ("ddrm", "unconditional")


class NestedRestoreSession(Restoring, NestedSession):
    """Nested DDRM as a resumable iterator of frames, one per outer step, composed from its parts.

    Starts from DDRM's x_T' given y at the first outer time. Outer step k at τ: (1) the inner run from
    x_τ to clean data on ``schedule.inner_timesteps(τ, M, inner_grid_power)`` — DDRM with η = ``eta``
    (or, ``inner="unconditional"``, the project's unconditional inner sampler DPM-Solver++(2M) with
    η = ``eta``); its output x̂0' is the frame's image; (2) the DDRM update from τ to τ' with x̂0' as x̂0
    and η = ``outer_eta`` (no NFE). The last frame is the last inner output. The measurements live in
    the DDRM samplers, so ``fork(indices=)`` picks them with the images, and :meth:`set_measurement` replaces
    them from the next step on (an inpainting mask edited mid-run).

    The layout is :func:`~nested_diffusion.planner.resolve_layout`'s for the counts given, on the trailing
    outer grid ``schedule.inner_timesteps(top, K)`` (the vanilla grid on a VP schedule); with neither count, the frame fractions of
    :func:`~nested_diffusion.planner.plan_schedule` (inner steps 10, 10, 10, 20, 25, 25), measured for
    restoration too (BENCHMARKS.md §6). With ``inner_steps=1`` and σ_y > 0 this is exactly
    :class:`~nested_diffusion.restoration.DDRMSession` with ``outer_steps`` steps and η = ``outer_eta``.
    """

    def __init__(self, model: Model, schedule: Schedule | Any, noise: torch.Tensor, *,
                 operator: LinearOperator, measurement: torch.Tensor, sigma_y: float,
                 prediction_type: str | None = None, outer_steps: int | None = None,
                 inner_steps: int | Sequence[int] | None = None, inner: str = "ddrm",
                 eta: float = DEFAULT_RESTORE_INNER_ETA, eta_b: float = DEFAULT_DDRM_ETA_B,
                 outer_eta: float | None = None, inner_grid_power: float = DEFAULT_RESTORE_INNER_GRID_POWER,
                 generator: Generator = None, model_kwargs: dict[str, Any] | None = None) -> None:
        if inner not in INNER_KINDS:
            raise ValueError(f"inner must be one of {INNER_KINDS}, got {inner!r}")
        eta, eta_b = check_eta(eta, "eta"), check_eta(eta_b, "eta_b")
        outer_eta = check_eta(DEFAULT_RESTORE_OUTER_ETA if outer_eta is None else outer_eta, "outer_eta")
        inner_grid_power = check_grid_power(inner_grid_power, "inner_grid_power")
        schedule = as_schedule(schedule)
        if outer_steps is None and inner_steps is None:
            inner_steps = plan_schedule(DEFAULT_BUDGET, max_steps=schedule.max_steps)
        layout = resolve_layout(schedule, outer_steps=outer_steps, inner_steps=inner_steps)
        # the outer grid trailing from the top (on VP the vanilla grid; on a flow schedule with SD3's spacing
        # the vanilla grid's last point is σ_min, where a last inner run has nothing left to do)
        outer = schedule.inner_timesteps(schedule.top, len(layout.inner_steps))
        problem = InverseProblem(operator, measurement, sigma_y, check_noise(noise))
        inner_sampler = DDRM(problem, eta, eta_b) if inner == "ddrm" else make_sampler(DEFAULT_INNER_SAMPLER, eta)
        super().__init__(model, schedule, noise, prediction_type=prediction_type,
                         outer_timesteps=outer, inner_steps=layout.inner_steps,
                         inner_sampler=inner_sampler, outer_update=DDRM(problem, outer_eta, eta_b),
                         inner_power=inner_grid_power, start=problem.initial_state, generator=generator,
                         model_kwargs=model_kwargs)
        self.inner, self.inner_grid_power = inner, inner_grid_power

    @property
    def problem(self) -> InverseProblem:
        """The measurements being restored (of the images this session holds)."""
        return self.samplers["outer"].problem


def nested_restore(model: Model, schedule: Schedule | Any, noise: torch.Tensor, *, operator: LinearOperator,
                   measurement: torch.Tensor, sigma_y: float, prediction_type: str | None = None,
                   outer_steps: int | None = None, inner_steps: int | Sequence[int] | None = None,
                   inner: str = "ddrm", eta: float = DEFAULT_RESTORE_INNER_ETA, eta_b: float = DEFAULT_DDRM_ETA_B,
                   outer_eta: float | None = None, inner_grid_power: float = DEFAULT_RESTORE_INNER_GRID_POWER,
                   generator: Generator = None,
                   model_kwargs: dict[str, Any] | None = None) -> NestedRestoreSession:
    """Anytime restoration of ``measurement`` = H x + σ_y n (one per item of ``noise``); iterate for
    one :class:`~nested_diffusion.Frame` per outer step, each a measurement-consistent restoration.

    ``schedule`` is any schedule or a 1-D ᾱ table (pixel-space models: H acts on what the model samples).
    Layout as everywhere (:func:`~nested_diffusion.planner.resolve_layout`): with neither count the
    project's growing layout ``plan_schedule(100)`` (inner steps 10, 10, 10, 20, 25, 25), measured for
    restoration too (BENCHMARKS.md §6). η, outer η and the inner grid default to the measured
    ``DEFAULT_RESTORE_*`` values in :mod:`nested_diffusion.defaults`. See :class:`NestedRestoreSession`.
    Everything is validated here, before any network call.
    """
    return NestedRestoreSession(model, schedule, noise, operator=operator, measurement=measurement,
                                sigma_y=sigma_y, prediction_type=prediction_type, outer_steps=outer_steps,
                                inner_steps=inner_steps, inner=inner, eta=eta, eta_b=eta_b, outer_eta=outer_eta,
                                inner_grid_power=inner_grid_power, generator=generator, model_kwargs=model_kwargs)
