"""DDRM (Kawar et al., NeurIPS 2022) as a sampler over a denoiser, and its vanilla session, on any schedule.

Variables follow PAPER.md: for y = Hx + σ_y n with H = U Σ Vᵀ (singular values s_i), the scaled
spectral space is x̄ = Vᵀx_t / α_t with noise level σ̄_t = σ_t/α_t (√(1-ᾱ_t)/√ᾱ_t on a VP schedule);
ȳ_i = (Uᵀy)_i / s_i, x̄_θ = Vᵀx̂0 and ε̄ = (x̄_t - x̄_θ)/σ̄_t = (Vᵀx_t - α_t x̄_θ)/σ_t. DDRM's update is
natural in these variance-exploding variables, so it holds for any schedule; ε̄ is computed from x_t
directly, which stays finite at pure noise (α = 0, the start of a flow schedule). Every update is
elementwise in that space, so the operator is only ever applied through its implicit SVD.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from ..defaults import DEFAULT_DDRM_ETA, DEFAULT_DDRM_ETA_B, DEFAULT_DDRM_GRID_POWER
from ..samplers.noise import Generator, randn_like
from ..schedules import Level, Schedule, _as_level, as_schedule
from ..session import Model, check_noise, check_steps
from ..vanilla import VanillaSession
from .operators import LinearOperator, check_sigma_y

__all__ = ["ddrm_start", "ddrm_step", "ddrm_update", "InverseProblem", "DDRM", "DDRMSession", "ddrm_sample",
           "check_eta", "check_grid_power", "Restoring"]


def check_eta(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def check_grid_power(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number >= 1, got {type(value).__name__}")
    if not 1.0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 1 (1: evenly spaced timesteps), got {value}")
    return float(value)


def ddrm_start(n: torch.Tensor, y_bar: torch.Tensor, s: torch.Tensor, level: Level | float,
               sigma_y: float) -> torch.Tensor:
    """Vᵀx at the first level (PAPER.md), x̄ = ȳ_i + √(σ̄² - σ_y²/s_i²) n_i where s_i σ̄ > σ_y, else σ̄ n_i
    (σ̄ = σ/α), written as α x̄ so that it holds at pure noise too: α ȳ_i + √(σ² - α² σ_y²/s_i²) n_i where
    s_i σ > α σ_y, else σ n_i. ``level`` may be a VP ᾱ."""
    alpha, sigma = _as_level(level)
    informative = s * sigma > alpha * sigma_y
    s_safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(informative, alpha * y_bar + (sigma**2 - alpha**2 * sigma_y**2 / s_safe**2).clamp_min(0).sqrt() * n,
                       sigma * n)


def ddrm_step(x_bar: torch.Tensor, x_bar_theta: torch.Tensor, y_bar: torch.Tensor, s: torch.Tensor, sigma: float,
              sigma_next: float, sigma_y: float, eta: float, eta_b: float,
              generator: Generator = None) -> torch.Tensor:
    """One DDRM update x̄_t → x̄_t' in the paper's variables (noise levels σ̄ = ``sigma``, ``sigma_next``):
    :func:`ddrm_update` with ε̄ = (x̄ - x̄_θ)/σ̄."""
    eps_bar = (x_bar - x_bar_theta) / sigma if sigma > 0 else torch.zeros_like(x_bar)
    return ddrm_update(eps_bar, x_bar_theta, y_bar, s, sigma_next, sigma_y, eta, eta_b, generator)


def ddrm_update(eps_bar: torch.Tensor, x_bar_theta: torch.Tensor, y_bar: torch.Tensor, s: torch.Tensor,
                sigma_next: float, sigma_y: float, eta: float, eta_b: float,
                generator: Generator = None) -> torch.Tensor:
    """The DDRM update to x̄_t' (PAPER.md; Kawar et al. 2022, eqs. 7–8), n ~ N(0, I) fresh, σ' = ``sigma_next``:

    - s_i = 0:               x̄'_i = x̄_θ,i + √(1-η²) σ' ε̄_i + η σ' n_i
    - 0 < s_i σ' < σ_y:      x̄'_i = x̄_θ,i + √(1-η²) σ' (ȳ_i - x̄_θ,i) s_i/σ_y + η σ' n_i
    - s_i σ' ≥ σ_y:          x̄'_i = (1-η_b) x̄_θ,i + η_b ȳ_i + √(σ'² - η_b² σ_y²/s_i²) n_i

    ``s`` and ``y_bar`` are padded with zeros to the spectral length n. At σ' = 0 nothing is
    random: the result is x̄_θ, with the measured components replaced by ȳ when σ_y = 0 (η_b = 1).
    """
    n = randn_like(x_bar_theta, generator) if sigma_next > 0 else torch.zeros_like(x_bar_theta)
    s_safe = torch.where(s > 0, s, torch.ones_like(s))
    keep = math.sqrt(1.0 - eta**2) * sigma_next  # the deterministic share of σ'
    # unmeasured directions: a DDIM-like step (η² of the variance is fresh noise)
    unmeasured = x_bar_theta + keep * eps_bar + eta * sigma_next * n
    # y noisier than x̄_t' would be: move towards ȳ by the deterministic share, in units of σ_y/s
    noisier_y = x_bar_theta + keep * (y_bar - x_bar_theta) * s / (sigma_y or 1.0) + eta * sigma_next * n
    # y at least as clean as x̄_t': blend in ȳ and add the variance y lacks
    cleaner_y = (1.0 - eta_b) * x_bar_theta + eta_b * y_bar \
        + (sigma_next**2 - eta_b**2 * sigma_y**2 / s_safe**2).clamp_min(0).sqrt() * n
    return torch.where(s == 0, unmeasured, torch.where(s * sigma_next < sigma_y, noisier_y, cleaner_y))


class InverseProblem:
    """One batch of measurements ``y`` (one per item) of items shaped like ``like[0]`` through
    ``operator`` with noise σ_y, in the scaled spectral space: ``s`` (n,) and ``y_bar`` (batch, n),
    both zero in the unmeasured components. Validates everything before any network call."""

    def __init__(self, operator: LinearOperator, measurement: torch.Tensor, sigma_y: float, like: torch.Tensor) -> None:
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"operator must be a nested_diffusion.restoration operator (Inpainting, SuperResolution, "
                            f"Deblur, Colorization, Denoising, Dense), got {type(operator).__name__}")
        self.sigma_y = check_sigma_y(sigma_y)
        self.shape = tuple(like.shape[1:])
        expected = (like.shape[0], *operator.measurement_shape(self.shape))
        if not isinstance(measurement, torch.Tensor) or not measurement.is_floating_point():
            raise TypeError(f"measurement must be a floating-point tensor of shape {expected}, "
                            f"got {type(measurement).__name__}")
        if tuple(measurement.shape) != expected:
            raise ValueError(f"measurement must have shape {expected} (one measurement per item of noise, "
                             f"{operator!r} on items of shape {self.shape}), got {tuple(measurement.shape)}")
        if not torch.isfinite(measurement).all():
            raise ValueError("measurement contains NaN or infinite values")
        s = operator.singular_values(self.shape, like.device, like.dtype)
        if not (s > 0).any():
            raise ValueError(f"{operator!r} measures nothing on items of shape {self.shape} (all singular values are 0)")
        self.operator = operator
        self.measurement = measurement.to(device=like.device, dtype=like.dtype)
        n, r = like[0].numel(), s.numel()
        self.s = torch.zeros(n, device=like.device, dtype=like.dtype)
        self.s[:r] = s
        inv = torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
        self.y_bar = torch.zeros(like.shape[0], n, device=like.device, dtype=like.dtype)
        self.y_bar[:, :r] = operator.Ut(self.measurement, self.shape)[:, :r] * inv

    def select_rows(self, rows: list[int]) -> "InverseProblem":
        """The same problem for the measurements ``rows`` only (``Session.fork(indices=)``)."""
        child = copy.copy(self)
        index = torch.tensor(rows, dtype=torch.long, device=self.y_bar.device)
        child.measurement, child.y_bar = self.measurement[index], self.y_bar[index]
        return child

    def initial_state(self, noise: torch.Tensor, level: Level | float) -> torch.Tensor:
        """x at the first level given y: V (α x̄) with α x̄ from :func:`ddrm_start` and n = Vᵀ noise (still
        N(0, I)); ``level`` may be a VP ᾱ."""
        return self.operator.V(ddrm_start(self.operator.Vt(noise), self.y_bar, self.s, level, self.sigma_y), self.shape)


@dataclass(frozen=True)
class DDRM:
    """The DDRM update as a :class:`~nested_diffusion.samplers.Sampler`: ``step(x_t, x̂0, level, next)``
    maps to the scaled spectral space (ε̄ = (Vᵀx_t - α x̄_θ)/σ, σ̄' = σ'/α'), applies :func:`ddrm_update`
    and maps back (x_t' = α' V x̄')."""

    problem: InverseProblem
    eta: float = DEFAULT_DDRM_ETA
    eta_b: float = DEFAULT_DDRM_ETA_B

    def select_rows(self, rows: list[int]) -> "DDRM":
        return dataclasses.replace(self, problem=self.problem.select_rows(rows))

    def with_problem(self, problem: InverseProblem) -> "DDRM":
        """The same update for another measurement (a mask changed mid-run)."""
        return dataclasses.replace(self, problem=problem)

    def step(self, x: torch.Tensor, denoised: torch.Tensor, level: Level, next_level: Level,
             carry: Any = None, generator: Generator = None) -> tuple[torch.Tensor, Any]:
        p, op = self.problem, self.problem.operator
        (alpha, sigma), (alpha_next, sigma_next) = _as_level(level), _as_level(next_level)
        x_bar_theta = op.Vt(denoised)
        eps_bar = (op.Vt(x) - alpha * x_bar_theta) / sigma
        x_bar_next = ddrm_update(eps_bar, x_bar_theta, p.y_bar, p.s, sigma_next / alpha_next, p.sigma_y, self.eta,
                                 self.eta_b, generator)
        return alpha_next * op.V(x_bar_next, p.shape), None


def _with_problem(value: Any, problem: InverseProblem) -> Any:
    """The samplers of a session with every DDRM update given ``problem`` (the others unchanged)."""
    if isinstance(value, DDRM):
        return value.with_problem(problem)
    if isinstance(value, dict):
        return {k: _with_problem(v, problem) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_with_problem(v, problem) for v in value)
    return value


class Restoring:
    """What a restoration session adds to its base session: :attr:`problem` (the measurements its DDRM
    updates use) and :meth:`set_measurement`, the restoration's counterpart of
    :meth:`~nested_diffusion.pipelines.PipelineSession.set_edit` (e.g. an inpainting mask edited mid-run)."""

    samplers: dict[str, Any]
    x: torch.Tensor

    @property
    def problem(self) -> InverseProblem:
        """The measurements being restored (of the images this session holds)."""
        raise NotImplementedError

    def set_measurement(self, measurement: torch.Tensor, *, operator: LinearOperator | None = None,
                        sigma_y: float | None = None) -> None:
        """Restore another measurement y = H x + σ_y n from the next step on (frames already produced are
        unaffected): ``measurement`` in ``operator``'s shape (default: the current H), one per image or one for
        all, with noise ``sigma_y`` (default: the current σ_y). Every DDRM update — the outer step and DDRM inner
        runs — then uses it; the state stays, so the next step starts from where the session is (DDRM's update
        pulls the measured components to the new ȳ: with σ_y = 0 they equal it exactly in every later frame).
        Validated like a new problem, before anything changes."""
        current = self.problem
        operator = current.operator if operator is None else operator
        if isinstance(measurement, torch.Tensor) and measurement.ndim >= 1 and len(measurement) == 1 < len(self.x):
            measurement = measurement.expand(len(self.x), *measurement.shape[1:])
        problem = InverseProblem(operator, measurement, current.sigma_y if sigma_y is None else sigma_y, self.x)
        self.samplers = _with_problem(self.samplers, problem)  # replaced, never mutated: forks keep their own


class DDRMSession(Restoring, VanillaSession):
    """Vanilla DDRM as a session: ``steps`` network calls on ``schedule.inner_timesteps(top, steps, grid_power)``
    (trailing — on a VP schedule the vanilla grid —, bent towards the clean end by ``grid_power``), started from
    DDRM's x_T' given y
    (:meth:`InverseProblem.initial_state`), each step the :class:`DDRM` update. Frames are the x̂0
    previews; the last frame is the restoration. Composed from its parts: the measurements live in the
    sampler, so ``fork(indices=)`` picks them with the images."""

    def __init__(self, model: Model, schedule: Schedule | Any, noise: torch.Tensor, *,
                 operator: LinearOperator, measurement: torch.Tensor, sigma_y: float,
                 prediction_type: str | None = None, steps: int = 100, eta: float = DEFAULT_DDRM_ETA,
                 eta_b: float = DEFAULT_DDRM_ETA_B, grid_power: float = DEFAULT_DDRM_GRID_POWER,
                 generator: Generator = None, model_kwargs: dict[str, Any] | None = None) -> None:
        eta, eta_b = check_eta(eta, "eta"), check_eta(eta_b, "eta_b")
        grid_power = check_grid_power(grid_power, "grid_power")
        schedule = as_schedule(schedule)
        problem = InverseProblem(operator, measurement, sigma_y, check_noise(noise))
        steps = check_steps(steps, "steps", schedule)
        timesteps = schedule.inner_timesteps(schedule.top, steps, grid_power)  # the trailing grid (VP: the vanilla one)
        super().__init__(model, schedule, noise, prediction_type=prediction_type, steps=len(timesteps),
                         sampler=DDRM(problem, eta, eta_b), timesteps=timesteps, start=problem.initial_state,
                         generator=generator, model_kwargs=model_kwargs)

    @property
    def problem(self) -> InverseProblem:
        """The measurements being restored (of the images this session holds)."""
        return self.samplers["step"].problem


def ddrm_sample(model: Model, schedule: Schedule | Any, noise: torch.Tensor, *, operator: LinearOperator,
                measurement: torch.Tensor, sigma_y: float, prediction_type: str | None = None, steps: int = 100,
                eta: float = DEFAULT_DDRM_ETA, eta_b: float = DEFAULT_DDRM_ETA_B,
                grid_power: float = DEFAULT_DDRM_GRID_POWER, generator: Generator = None,
                model_kwargs: dict[str, Any] | None = None) -> DDRMSession:
    """DDRM restoration of ``measurement`` = H x + σ_y n (one per item of ``noise``); iterate for one
    :class:`~nested_diffusion.Frame` per network call (x̂0 previews; the last is the restoration).

    ``operator`` is a :mod:`nested_diffusion.restoration` operator, σ_y is on the model's data scale
    ([-1, 1] for images), η / η_b follow Kawar et al. (defaults 0.85 / 1). ``schedule`` is any schedule
    (or a 1-D ᾱ table): DDRM's update holds in the variance-exploding variables of every one.
    ``grid_power`` bends the grid towards the clean end (1: evenly spaced, 2: DDIM's quadratic).
    Everything is validated here, before any network call.
    """
    return DDRMSession(model, schedule, noise, operator=operator, measurement=measurement, sigma_y=sigma_y,
                       prediction_type=prediction_type, steps=steps, eta=eta, eta_b=eta_b, grid_power=grid_power,
                       generator=generator, model_kwargs=model_kwargs)
