"""Nested diffusion (Elata et al., WACV 2024): an outer diffusion process whose denoiser is a whole
inner diffusion sampler started from the current outer state."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .defaults import DEFAULT_INNER_ETA, DEFAULT_OUTER_ETA, DEFAULT_STEPS, OUTER_UPDATES
from .samplers import SAMPLERS, DDIM, Renoise, Sampler, iterate, make_sampler
from .samplers.noise import Generator
from .schedules import CLEAN, Level, Schedule, Time, as_schedule, check_grid_end
from .session import Model, Session, check_steps

__all__ = ["NestedSession", "nested_sample", "nested_grids", "renoise", "OUTER_UPDATES", "DEFAULT_INNER_ETA",
           "DEFAULT_OUTER_ETA"]

def nested_grids(schedule: Schedule | Any, inner_steps: Sequence[int], outer_timesteps: Sequence[Time] | None = None,
                 inner_power: float = 1.0, inner_spacing: str | Sequence[str | None] | None = None,
                 inner_grid_end: float | None = None) -> tuple[list[Time], list[list[Time]]]:
    """Outer times (``outer_timesteps`` or, by default, the schedule's vanilla grid with one point per
    entry of ``inner_steps``) and, per outer step, the inner grid ``schedule.inner_timesteps(τ, M,
    inner_power)`` — on ``schedule.replace(spacing=...)`` where ``inner_spacing`` names a spacing (one for
    every run, or one per outer step; ``None``: the schedule's own), and ``replace(grid_end=...)`` where
    ``inner_grid_end`` is given (the σ/α where Karras and log-SNR inner grids end). An inner run from τ costs
    its length: min(M, τ+1) on a discrete VP schedule, M on a continuous one."""
    schedule = as_schedule(schedule)
    outer = list(outer_timesteps) if outer_timesteps is not None else schedule.timesteps(len(inner_steps))
    spacings = _per_step(inner_spacing, len(outer))
    if inner_grid_end is not None:
        schedule = schedule.replace(grid_end=inner_grid_end)
    schedules = {sp: schedule if sp is None else schedule.replace(spacing=sp) for sp in set(spacings)}
    return outer, [schedules[sp].inner_timesteps(tau, m, inner_power) for tau, m, sp in zip(outer, inner_steps, spacings)]


def _per_step(inner_spacing: Any, steps: int) -> list[str | None]:
    """One spacing name (or ``None``) per outer step."""
    if inner_spacing is None or isinstance(inner_spacing, str):
        return [inner_spacing] * steps
    if not isinstance(inner_spacing, (list, tuple)) or any(v is not None and not isinstance(v, str)
                                                             for v in inner_spacing):
        raise TypeError(f"inner_spacing must be a spacing name, one per outer step, or None, got {inner_spacing!r}")
    if len(inner_spacing) != steps:
        raise ValueError(f"inner_spacing as a sequence needs one entry per outer step ({steps}), got "
                         f"{len(inner_spacing)}")
    return list(inner_spacing)


def renoise(denoised: torch.Tensor, next_level: Level | float, generator: Generator = None) -> torch.Tensor:
    """The forward process from a sample: x_τ' = α_τ' x̂0' + σ_τ' z (Ho et al. 2020, eq. 4); a VP ᾱ may
    stand for the level (√ᾱ, √(1-ᾱ)).

    As an outer step it forgets x_τ: if x̂0' ~ p(x0) then x_τ' ~ p(x_τ') exactly, whatever τ and
    τ' are, so the inner sampler needs only to produce good *marginal* samples (a deterministic ODE
    solver will do) — the outer process restarts the inner one at a lower noise level (Restart
    sampling, Xu et al. 2023)."""
    from .schedules import _as_level

    return Renoise().step(denoised, denoised, CLEAN, _as_level(next_level), None, generator)[0]


def _outer_sampler(outer_update: Any, outer_eta: float | None) -> Sampler:
    """The outer step: "ddim" (η = ``outer_eta``, default :data:`DEFAULT_OUTER_ETA`), "renoise" (no η) or
    any sampler object (e.g. restoration's DDRM update)."""
    if isinstance(outer_update, str):
        if outer_update not in OUTER_UPDATES:
            raise ValueError(f"outer_update must be one of {OUTER_UPDATES} or a sampler, got {outer_update!r}")
        if outer_update == "renoise":
            if outer_eta is not None:
                raise ValueError(f"outer_eta ({outer_eta}) is the η of the DDIM outer step; outer_update='renoise' "
                                 "has none: give outer_update='ddim' with it, or leave outer_eta out")
            return Renoise()
        return make_sampler("ddim", DEFAULT_OUTER_ETA if outer_eta is None else outer_eta, argument="outer")
    if not callable(getattr(outer_update, "step", None)):
        raise TypeError(f"outer_update must be one of {OUTER_UPDATES} or a sampler, got {type(outer_update).__name__}")
    return outer_update


def _inner_samplers(inner_sampler: Any, inner_eta: Any, steps: int) -> list[Sampler]:
    """One inner sampler per outer step: a name with one η or one per step, a sampler object, or a list of
    sampler objects (one per outer step)."""
    if isinstance(inner_sampler, (list, tuple)):
        if len(inner_sampler) != steps or not all(callable(getattr(s, "step", None)) for s in inner_sampler):
            raise ValueError(f"inner_sampler as a list needs one sampler object per outer step ({steps})")
        if inner_eta is not None:
            raise ValueError("inner_eta is for a named inner_sampler; sampler objects carry their own")
        return list(inner_sampler)
    if not isinstance(inner_sampler, str):
        if not callable(getattr(inner_sampler, "step", None)):
            raise ValueError(f"inner_sampler must be one of {sorted(SAMPLERS)} or a sampler, got {inner_sampler!r}")
        if inner_eta is not None:
            raise ValueError("inner_eta is for a named inner_sampler; this sampler object carries its own")
        return [inner_sampler] * steps
    free_eta = inner_sampler in SAMPLERS and not SAMPLERS[inner_sampler][2]
    if inner_eta is None:
        inner_eta = DEFAULT_INNER_ETA if free_eta else None
    if isinstance(inner_eta, (list, tuple)):
        if len(inner_eta) != steps:
            raise ValueError(f"inner_eta as a sequence needs one entry per outer step ({steps}), got {len(inner_eta)}")
        return [make_sampler(inner_sampler, eta, argument="inner_sampler") for eta in inner_eta]
    return [make_sampler(inner_sampler, inner_eta, argument="inner_sampler")] * steps


class NestedSession(Session):
    """Nested diffusion as a resumable iterator of frames, one per outer step.

    Outer step k at time τ_k (``outer_timesteps``; by default the schedule's vanilla grid of
    ``outer_steps`` points):

    1. inner run: the inner sampler with ``inner_steps`` steps from the outer state x_τ to clean data
       (grid ``schedule.inner_timesteps(τ, M, inner_power)``, first call at τ) — output x̂0', the frame;
    2. outer step to τ' = τ_{k+1} with x̂0' in place of the network's x̂0 (costs no NFE):

       - ``outer_update="ddim"`` (the paper's): ε̂ = (x_τ - α_τ x̂0')/σ_τ,
         x_τ' = α_τ' x̂0' + √(σ_τ'² - c²) ε̂ + c z, c = η_outer σ_τ' √(1 - (σ_τ' α_τ / (α_τ' σ_τ))²);
         exact when x̂0' is a sample of p(x0 | x_τ) and η_outer = 1, so the inner sampler must be
         stochastic;
       - ``outer_update="renoise"``: x_τ' = α_τ' x̂0' + σ_τ' z (:func:`renoise`); exact when x̂0'
         is a sample of p(x0), so a deterministic inner solver will do;
       - any sampler object, e.g. restoration's DDRM update (:mod:`nested_diffusion.restoration`).

    ``inner_steps``, ``inner_eta`` and ``inner_spacing`` are one value or one per outer step;
    ``inner_sampler`` is a name, a sampler object or a list of them (one per outer step); ``inner_spacing``
    names the grid of an inner run (``schedule.replace(spacing=...)``, e.g. ``"logsnr"`` or ``"karras"`` on a
    discrete VP schedule; ``None``: the schedule's own) and ``inner_grid_end`` the noise level σ/α where those
    two grids end (``replace(grid_end=...)``; ``None``: the schedule's own end) — samplers never see either. With ``inner_steps=1`` and the default grid this is exactly the vanilla sampler
    DDIM with ``outer_steps`` steps and η = ``outer_eta`` (Euler for η = 0 on a flow schedule).
    ``inner_eta``/``outer_eta`` default to :data:`DEFAULT_INNER_ETA` / :data:`DEFAULT_OUTER_ETA`;
    ``start`` maps the initial noise to the state at the first outer level (default: the noise itself).
    """

    def __init__(self, model: Model, schedule: Schedule | Any, noise: torch.Tensor, *,
                 prediction_type: str | None = None, outer_steps: int | None = None,
                 inner_steps: int | Sequence[int] = DEFAULT_STEPS, inner_sampler: str | Sampler = "ddim",
                 inner_eta: float | Sequence[float] | None = None, outer_eta: float | None = None,
                 outer_timesteps: Sequence[Time] | None = None, outer_update: str | Sampler = "ddim",
                 inner_power: float = 1.0, start: Callable[[torch.Tensor, Level], torch.Tensor] | None = None,
                 generator: Generator = None, model_kwargs: dict[str, Any] | None = None,
                 inner_spacing: str | Sequence[str | None] | None = None,
                 inner_grid_end: float | None = None) -> None:
        super().__init__(model, schedule, noise, prediction_type=prediction_type, generator=generator,
                         model_kwargs=model_kwargs)
        schedule = self.schedule
        if outer_timesteps is not None:
            outer_timesteps = schedule.check_times(outer_timesteps, "outer_timesteps")
            if outer_steps is not None and outer_steps != len(outer_timesteps):
                raise ValueError(f"outer_steps ({outer_steps}) must equal len(outer_timesteps) "
                                 f"({len(outer_timesteps)}), or be left out")
            outer_steps = len(outer_timesteps)
        outer_steps = DEFAULT_STEPS if outer_steps is None else outer_steps
        self.num_steps = check_steps(outer_steps, "outer_steps", schedule)
        if isinstance(inner_steps, (list, tuple)):
            if len(inner_steps) != outer_steps:
                raise ValueError(f"inner_steps as a sequence needs one entry per outer step "
                                 f"({outer_steps}), got {len(inner_steps)}")
            self.inner_steps = [check_steps(m, "inner_steps", schedule) for m in inner_steps]
        else:
            self.inner_steps = [check_steps(inner_steps, "inner_steps", schedule)] * outer_steps
        self.samplers = {"inner": _inner_samplers(inner_sampler, inner_eta, outer_steps),
                         "outer": _outer_sampler(outer_update, outer_eta)}
        self.outer_update = outer_update if isinstance(outer_update, str) else type(outer_update).__name__.lower()
        if not isinstance(inner_power, (int, float)) or isinstance(inner_power, bool) or not inner_power >= 1:
            raise ValueError(f"inner_power must be a number >= 1 (1: evenly spaced inner grids), got {inner_power!r}")
        self._inner_power = inner_power
        inner_grid_end = check_grid_end(inner_grid_end, "inner_grid_end")
        try:
            self.outer_timesteps, self._inner_grids = nested_grids(schedule, self.inner_steps, outer_timesteps,
                                                                   inner_power, inner_spacing, inner_grid_end)
        except ValueError as e:
            if "spacing" not in str(e):
                raise
            raise ValueError(f"inner_spacing: {e}") from None
        self.inner_grid_end = inner_grid_end
        self.inner_spacing = _per_step(inner_spacing, self.num_steps)
        if start is not None:
            self.state = {"x": start(self.x, schedule.level(self.outer_timesteps[0]))}

    # -- what the samplers are (read-only views of self.samplers) ----------------------------------
    @property
    def inner_samplers(self) -> list[Sampler]:
        """The inner sampler of each outer step."""
        return self.samplers["inner"]

    @property
    def inner_sampler(self) -> Sampler:
        """The first outer step's inner sampler (all of them, unless ``inner_eta`` varies by step)."""
        return self.samplers["inner"][0]

    @property
    def outer_sampler(self) -> Sampler:
        return self.samplers["outer"]

    @property
    def outer_eta(self) -> float | None:
        """η of a DDIM outer step (``None`` for other outer updates)."""
        outer = self.samplers["outer"]
        return outer.eta if isinstance(outer, DDIM) else None

    def replan(self, x: torch.Tensor, outer_timesteps: Sequence[Time], inner_steps: Sequence[int]) -> None:
        """Restart the outer process from the next step on: the state ``x`` at ``outer_timesteps[0]`` and the
        remaining outer grid with its inner counts (e.g. an edit given a new strength mid-run). Completed steps,
        their frames and NFEs stay; the remaining steps reuse the last inner sampler and grid spacing. Call it between steps."""
        outer = self.schedule.check_times(outer_timesteps, "outer_timesteps")
        inner = [check_steps(m, "inner_steps", self.schedule) for m in inner_steps]
        if len(inner) != len(outer):
            raise ValueError(f"inner_steps needs one count per outer time ({len(outer)}), got {len(inner)}")
        k = self.k
        self.outer_timesteps = self.outer_timesteps[:k] + outer
        self.inner_steps = self.inner_steps[:k] + inner
        spacing = self.inner_spacing[-1]  # the remaining runs on the last run's grid, as with its sampler
        self._inner_grids = self._inner_grids[:k] + nested_grids(self.schedule, inner, outer, self._inner_power,
                                                                 spacing, self.inner_grid_end)[1]
        self.inner_spacing = self.inner_spacing[:k] + [spacing] * len(outer)
        self.samplers = {**self.samplers, "inner": self.samplers["inner"][:k] + [self.samplers["inner"][-1]] * len(outer)}
        self.num_steps = k + len(outer)
        self.state = {**self.state, "x": x}

    def timestep_at(self, k: int) -> Time:
        return self.outer_timesteps[k]

    def cost_at(self, k: int) -> int:
        return len(self._inner_grids[k])

    def _advance(self, denoise) -> tuple[torch.Tensor, dict[str, Any]]:
        k, x, schedule = self.k, self.x, self.schedule
        # 1. inner process from the outer state: its output is this step's anytime image
        for _, _, inner_x in iterate(denoise, x, self._inner_grids[k], schedule, self.samplers["inner"][k],
                                     self.generator):
            pass
        denoised = inner_x
        # 2. outer step to the next outer time with the inner sample in place of the network's x̂0
        if k + 1 == self.num_steps:
            x = denoised
        else:
            level, next_level = schedule.level(self.outer_timesteps[k]), schedule.level(self.outer_timesteps[k + 1])
            x, _ = self.samplers["outer"].step(x, denoised, level, next_level, None, self.generator)
        return denoised, {"x": x}


def nested_sample(model: Model, schedule: Schedule | Any, noise: torch.Tensor, *,
                  prediction_type: str | None = None, outer_steps: int | None = None,
                  inner_steps: int | Sequence[int] = DEFAULT_STEPS, inner_sampler: str | Sampler = "ddim",
                  inner_eta: float | Sequence[float] | None = None,
                  outer_eta: float | None = None, outer_timesteps: Sequence[Time] | None = None,
                  outer_update: str | Sampler = "ddim", inner_power: float = 1.0,
                  generator: Generator = None, model_kwargs: dict[str, Any] | None = None,
                  inner_spacing: str | Sequence[str | None] | None = None,
                  inner_grid_end: float | None = None) -> NestedSession:
    """Nested diffusion sampling; iterate the result for one :class:`Frame` per outer step.

    ``model(x_t, t, **model_kwargs)`` returns the network output (``t``: the schedule's model time,
    shape (batch,)); ``schedule`` is a :mod:`~nested_diffusion.schedules` schedule (e.g.
    ``flow_matching(3.0)``) or a 1-D ᾱ training table; ``noise`` is x_T ~ N(0, I); ``generator`` one
    ``torch.Generator`` or a list, one per image. Arguments are validated here, before any network call.
    See :class:`NestedSession` for the algorithm.
    """
    return NestedSession(model, schedule, noise, prediction_type=prediction_type,
                         outer_steps=outer_steps, inner_steps=inner_steps, inner_sampler=inner_sampler,
                         inner_eta=inner_eta, outer_eta=outer_eta, outer_timesteps=outer_timesteps,
                         outer_update=outer_update, inner_power=inner_power, generator=generator,
                         model_kwargs=model_kwargs, inner_spacing=inner_spacing, inner_grid_end=inner_grid_end)
