"""Nested diffusion (Elata et al., WACV 2024): an outer diffusion process whose denoiser is a whole
inner diffusion sampler started from the current outer state."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .defaults import DEFAULT_INNER_ETA, DEFAULT_OUTER_ETA
from .samplers import SAMPLERS, iterate, make_sampler, randn_like
from .schedules import spaced_timesteps
from .session import Model, Session

__all__ = ["NestedSession", "nested_sample", "nested_grids", "renoise", "OUTER_UPDATES", "DEFAULT_INNER_ETA",
           "DEFAULT_OUTER_ETA"]

#: How the outer state moves from τ to τ' given the inner sample x̂0' (see :class:`NestedSession`).
OUTER_UPDATES = ("ddim", "renoise")


def nested_grids(num_train_timesteps: int, outer_steps: int, inner_steps: Sequence[int],
                 inner_power: float = 1.0, outer_timesteps: Sequence[int] | None = None
                 ) -> tuple[list[int], list[list[int]]]:
    """Outer timesteps (``outer_timesteps`` or, by default, ``spaced_timesteps(T-1, K)``) and, per
    outer step, the inner grid ``spaced_timesteps(τ, M, inner_power)`` — an inner run from τ costs
    ``len(grid) = min(M, τ+1)`` NFEs."""
    outer = list(outer_timesteps) if outer_timesteps is not None else spaced_timesteps(num_train_timesteps - 1,
                                                                                      outer_steps)
    return outer, [spaced_timesteps(tau, m, inner_power) for tau, m in zip(outer, inner_steps)]


def renoise(denoised: torch.Tensor, alpha_bar_next: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The forward process from a sample: x_τ' = √ᾱ_τ' x̂0' + √(1-ᾱ_τ') z (Ho et al. 2020, eq. 4).

    As an outer step it forgets x_τ: if x̂0' ~ p(x0) then x_τ' ~ p(x_τ') exactly, whatever τ and
    τ' are, so the inner sampler needs only to produce good *marginal* samples (a deterministic ODE
    solver will do) — the outer process restarts the inner one at a lower noise level (Restart
    sampling, Xu et al. 2023)."""
    if alpha_bar_next >= 1.0:
        return denoised
    return math.sqrt(alpha_bar_next) * denoised + math.sqrt(1.0 - alpha_bar_next) * randn_like(denoised, generator)


def _check_steps(value: Any, name: str, T: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer in [1, {T}], got {type(value).__name__}")
    if not 1 <= value <= T:
        raise ValueError(f"{name} must be an integer in [1, {T}] (the number of training timesteps), got {value}")
    return value


def _check_outer_timesteps(value: Any, T: int) -> list[int]:
    try:
        taus = list(value)
    except TypeError:
        raise TypeError(f"outer_timesteps must be a sequence of integers, got {type(value).__name__}") from None
    if not taus or any(isinstance(t, bool) or not isinstance(t, int) for t in taus):
        raise TypeError(f"outer_timesteps must be a non-empty sequence of integers, got {value!r}")
    if any(not 0 <= t <= T - 1 for t in taus) or any(a <= b for a, b in zip(taus, taus[1:])):
        raise ValueError(f"outer_timesteps must decrease strictly within [0, {T - 1}] (the training timesteps), "
                         f"got {taus}")
    return taus


class NestedSession(Session):
    """Nested diffusion as a resumable iterator of frames, one per outer step.

    Outer step k at timestep τ_k (``outer_timesteps``; by default ``spaced_timesteps(T-1, outer_steps)``):

    1. inner run: the inner sampler with ``inner_steps`` steps from the outer state x_τ down to
       t = 0 (grid ``spaced_timesteps(τ, M)``, first call at τ) — output x̂0', the frame's image;
    2. outer step to τ' = τ_{k+1} with x̂0' in place of the network's x̂0 (costs no NFE):

       - ``outer_update="ddim"`` (the paper's): ε̂ = (x_τ - √ᾱ_τ x̂0')/√(1-ᾱ_τ),
         x_τ' = √ᾱ_τ' x̂0' + √(1-ᾱ_τ'-σ²) ε̂ + σ z, σ = η_outer √((1-ᾱ_τ')/(1-ᾱ_τ)) √(1-ᾱ_τ/ᾱ_τ');
         exact when x̂0' is a sample of p(x0 | x_τ) and η_outer = 1, so the inner sampler must be
         stochastic;
       - ``outer_update="renoise"``: x_τ' = √ᾱ_τ' x̂0' + √(1-ᾱ_τ') z (:func:`renoise`); exact when x̂0'
         is a sample of p(x0), so a deterministic inner solver will do.

    ``inner_steps`` and ``inner_eta`` are one value or one per outer step. With ``inner_steps=1`` and
    the default grid this is exactly vanilla DDIM with ``outer_steps`` steps and η = ``outer_eta``.
    ``inner_eta``/``outer_eta`` default to :data:`DEFAULT_INNER_ETA` / :data:`DEFAULT_OUTER_ETA`.
    """

    def __init__(self, model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *,
                 prediction_type: str = "epsilon", outer_steps: int | None = None,
                 inner_steps: int | Sequence[int] = 10, inner_sampler: str = "ddim",
                 inner_eta: float | Sequence[float] | None = None, outer_eta: float | None = None,
                 outer_timesteps: Sequence[int] | None = None, outer_update: str = "ddim",
                 generator: torch.Generator | None = None, model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(model, alphas_cumprod, noise, prediction_type=prediction_type,
                         generator=generator, model_kwargs=model_kwargs)
        T = self.num_train_timesteps
        if outer_timesteps is not None:
            outer_timesteps = _check_outer_timesteps(outer_timesteps, T)
            if outer_steps is not None and outer_steps != len(outer_timesteps):
                raise ValueError(f"outer_steps ({outer_steps}) must equal len(outer_timesteps) "
                                 f"({len(outer_timesteps)}), or be left out")
            outer_steps = len(outer_timesteps)
        outer_steps = 10 if outer_steps is None else outer_steps
        self.num_steps = _check_steps(outer_steps, "outer_steps", T)
        if isinstance(inner_steps, (list, tuple)):
            if len(inner_steps) != outer_steps:
                raise ValueError(f"inner_steps as a sequence needs one entry per outer step "
                                 f"({outer_steps}), got {len(inner_steps)}")
            self.inner_steps = [_check_steps(m, "inner_steps", T) for m in inner_steps]
        else:
            self.inner_steps = [_check_steps(inner_steps, "inner_steps", T)] * outer_steps
        free_eta = isinstance(inner_sampler, str) and inner_sampler in SAMPLERS and not SAMPLERS[inner_sampler][2]
        if inner_eta is None:
            inner_eta = DEFAULT_INNER_ETA if free_eta else None
        #: one sampler per outer step where ``inner_eta`` is a sequence, else None (``inner_sampler`` for all)
        self.inner_samplers: list | None = None
        if isinstance(inner_eta, (list, tuple)):
            if len(inner_eta) != outer_steps:
                raise ValueError(f"inner_eta as a sequence needs one entry per outer step ({outer_steps}), "
                                 f"got {len(inner_eta)}")
            self.inner_samplers = [make_sampler(inner_sampler, eta, argument="inner_sampler") for eta in inner_eta]
            self.inner_sampler = self.inner_samplers[0]
        else:
            self.inner_sampler = make_sampler(inner_sampler, inner_eta, argument="inner_sampler")
        if outer_update not in OUTER_UPDATES:
            raise ValueError(f"outer_update must be one of {OUTER_UPDATES}, got {outer_update!r}")
        self.outer_update = outer_update
        self.outer_sampler = make_sampler("ddim", DEFAULT_OUTER_ETA if outer_eta is None else outer_eta,
                                          argument="outer")
        self.outer_eta = self.outer_sampler.eta
        self.outer_timesteps, self._inner_grids = nested_grids(T, outer_steps, self.inner_steps,
                                                               outer_timesteps=outer_timesteps)

    def timestep_at(self, k: int) -> int:
        return self.outer_timesteps[k]

    def cost_at(self, k: int) -> int:
        return len(self._inner_grids[k])

    def _advance(self, denoise) -> tuple[torch.Tensor, dict[str, Any]]:
        k, x, a = self.k, self.x, self.alphas_cumprod
        # 1. inner process from the outer state: its output is this step's anytime image
        sampler = self.inner_samplers[k] if self.inner_samplers else self.inner_sampler
        for _, _, inner_x in iterate(denoise, x, self._inner_grids[k], a, sampler, self.generator):
            pass
        denoised = inner_x
        # 2. outer step to the next outer timestep with the inner sample in place of the network's x̂0
        if k + 1 == self.num_steps:
            x = denoised
        elif self.outer_update == "renoise":
            x = renoise(denoised, a[self.outer_timesteps[k + 1]], self.generator)
        else:
            x, _ = self.outer_sampler.step(x, denoised, a[self.outer_timesteps[k]], a[self.outer_timesteps[k + 1]],
                                           None, self.generator)
        return denoised, {"x": x}


def nested_sample(model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *,
                  prediction_type: str = "epsilon", outer_steps: int | None = None,
                  inner_steps: int | Sequence[int] = 10, inner_sampler: str = "ddim",
                  inner_eta: float | Sequence[float] | None = None,
                  outer_eta: float | None = None, outer_timesteps: Sequence[int] | None = None,
                  outer_update: str = "ddim", generator: torch.Generator | None = None,
                  model_kwargs: dict[str, Any] | None = None) -> NestedSession:
    """Nested diffusion sampling; iterate the result for one :class:`Frame` per outer step.

    ``model(x_t, t, **model_kwargs)`` returns the network output (``t``: int64, shape (batch,));
    ``alphas_cumprod`` is the 1-D training schedule ᾱ; ``noise`` is x_T ~ N(0, I). Arguments are
    validated here, before any network call. See :class:`NestedSession` for the algorithm.
    """
    return NestedSession(model, alphas_cumprod, noise, prediction_type=prediction_type,
                         outer_steps=outer_steps, inner_steps=inner_steps, inner_sampler=inner_sampler,
                         inner_eta=inner_eta, outer_eta=outer_eta, outer_timesteps=outer_timesteps,
                         outer_update=outer_update, generator=generator, model_kwargs=model_kwargs)
