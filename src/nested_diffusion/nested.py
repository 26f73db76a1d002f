"""Nested diffusion (Elata et al., WACV 2024): an outer diffusion process whose denoiser is a whole
inner diffusion sampler started from the current outer state."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .defaults import DEFAULT_INNER_ETA, DEFAULT_OUTER_ETA
from .samplers import iterate, make_sampler
from .schedules import spaced_timesteps
from .session import Model, Session

__all__ = ["NestedSession", "nested_sample", "nested_grids", "DEFAULT_INNER_ETA", "DEFAULT_OUTER_ETA"]


def nested_grids(num_train_timesteps: int, outer_steps: int, inner_steps: Sequence[int],
                 inner_power: float = 1.0) -> tuple[list[int], list[list[int]]]:
    """Outer timesteps ``spaced_timesteps(T-1, K)`` and, per outer step, the inner grid
    ``spaced_timesteps(τ, M, inner_power)`` — an inner run from τ costs ``len(grid) = min(M, τ+1)`` NFEs."""
    outer = spaced_timesteps(num_train_timesteps - 1, outer_steps)
    return outer, [spaced_timesteps(tau, m, inner_power) for tau, m in zip(outer, inner_steps)]


def _check_steps(value: Any, name: str, T: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer in [1, {T}], got {type(value).__name__}")
    if not 1 <= value <= T:
        raise ValueError(f"{name} must be an integer in [1, {T}] (the number of training timesteps), got {value}")
    return value


class NestedSession(Session):
    """Nested diffusion as a resumable iterator of frames, one per outer step.

    Outer step k at timestep τ (outer grid: ``spaced_timesteps(T-1, outer_steps)``):

    1. inner run: the inner sampler with ``inner_steps`` steps from the outer state x_τ down to
       t = 0 (grid ``spaced_timesteps(τ, M)``, first call at τ) — output x̂0', the frame's image;
    2. outer DDIM step to the next outer timestep τ' with x̂0' in place of the network's x̂0:
       ε̂ = (x_τ - √ᾱ_τ x̂0')/√(1-ᾱ_τ), x_τ' = √ᾱ_τ' x̂0' + √(1-ᾱ_τ'-σ²) ε̂ + σ z,
       σ = η_outer √((1-ᾱ_τ')/(1-ᾱ_τ)) √(1-ᾱ_τ/ᾱ_τ') (costs no NFE).

    ``inner_steps`` is an int or one int per outer step. With ``inner_steps=1`` this is exactly
    vanilla DDIM with ``outer_steps`` steps and η = ``outer_eta``. ``inner_eta``/``outer_eta``
    default to :data:`DEFAULT_INNER_ETA` / :data:`DEFAULT_OUTER_ETA`.
    """

    def __init__(self, model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *,
                 prediction_type: str = "epsilon", outer_steps: int = 10,
                 inner_steps: int | Sequence[int] = 10, inner_sampler: str = "ddim",
                 inner_eta: float | None = None, outer_eta: float | None = None,
                 generator: torch.Generator | None = None, model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(model, alphas_cumprod, noise, prediction_type=prediction_type,
                         generator=generator, model_kwargs=model_kwargs)
        T = self.num_train_timesteps
        self.num_steps = _check_steps(outer_steps, "outer_steps", T)
        if isinstance(inner_steps, (list, tuple)):
            if len(inner_steps) != outer_steps:
                raise ValueError(f"inner_steps as a sequence needs one entry per outer step "
                                 f"({outer_steps}), got {len(inner_steps)}")
            self.inner_steps = [_check_steps(m, "inner_steps", T) for m in inner_steps]
        else:
            self.inner_steps = [_check_steps(inner_steps, "inner_steps", T)] * outer_steps
        self.inner_sampler = make_sampler(
            inner_sampler, DEFAULT_INNER_ETA if inner_eta is None and inner_sampler in ("ddim", "dpmpp-2m")
            else inner_eta, argument="inner_sampler")
        self.outer_sampler = make_sampler("ddim", DEFAULT_OUTER_ETA if outer_eta is None else outer_eta,
                                          argument="outer")
        self.outer_eta = self.outer_sampler.eta
        self.outer_timesteps, self._inner_grids = nested_grids(T, outer_steps, self.inner_steps)

    def timestep_at(self, k: int) -> int:
        return self.outer_timesteps[k]

    def cost_at(self, k: int) -> int:
        return len(self._inner_grids[k])

    def _advance(self, denoise) -> tuple[torch.Tensor, dict[str, Any]]:
        k, x, a = self.k, self.x, self.alphas_cumprod
        # 1. inner process from the outer state: its output is this step's anytime image
        for _, _, inner_x in iterate(denoise, x, self._inner_grids[k], a, self.inner_sampler, self.generator):
            pass
        denoised = inner_x
        # 2. outer DDIM step with the inner sample in place of the network's x̂0
        if k + 1 < self.num_steps:
            x, _ = self.outer_sampler.step(x, denoised, a[self.outer_timesteps[k]], a[self.outer_timesteps[k + 1]],
                                           None, self.generator)
        else:
            x = denoised
        return denoised, {"x": x}


def nested_sample(model: Model, alphas_cumprod: torch.Tensor, noise: torch.Tensor, *,
                  prediction_type: str = "epsilon", outer_steps: int = 10, inner_steps: int | Sequence[int] = 10,
                  inner_sampler: str = "ddim", inner_eta: float | None = None, outer_eta: float | None = None,
                  generator: torch.Generator | None = None,
                  model_kwargs: dict[str, Any] | None = None) -> NestedSession:
    """Nested diffusion sampling; iterate the result for one :class:`Frame` per outer step.

    ``model(x_t, t, **model_kwargs)`` returns the network output (``t``: int64, shape (batch,));
    ``alphas_cumprod`` is the 1-D training schedule ᾱ; ``noise`` is x_T ~ N(0, I). Arguments are
    validated here, before any network call. See :class:`NestedSession` for the algorithm.
    """
    return NestedSession(model, alphas_cumprod, noise, prediction_type=prediction_type,
                         outer_steps=outer_steps, inner_steps=inner_steps, inner_sampler=inner_sampler,
                         inner_eta=inner_eta, outer_eta=outer_eta, generator=generator,
                         model_kwargs=model_kwargs)
