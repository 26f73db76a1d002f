"""Noise schedules: how data and noise are mixed at each point of a sampling grid, and how the network
is asked about it.

At grid time t a schedule gives a :class:`Level` (α_t, σ_t), ``x_t = α_t x0 + σ_t ε``; the network's own
time input (:meth:`Schedule.model_time`); and, with :func:`to_denoised`, the conversion of the network
output to x̂0. Samplers see only levels — the variance-preserving, exploding and flow forms are the same
model in other variables (x/α = x0 + (σ/α) ε) — so they never learn which kind of schedule they run on,
as k-diffusion's samplers never learn which model family their denoiser wraps. Two kinds:

* :class:`DiscreteVP` — a DDPM training table ᾱ_t, t = 0..T-1 (Ho et al. 2020): α = √ᾱ, σ = √(1-ᾱ),
  integer timesteps, the network called with t as int64. A 1-D ᾱ tensor is read as this kind everywhere.
* :class:`FlowMatching` — rectified flow (SD3, Flux): x_σ = (1-σ) x0 + σ ε, σ ∈ (0, 1] with a static or
  size-dependent shift, exactly as diffusers' ``FlowMatchEulerDiscreteScheduler`` defines it. Its grid
  times are diffusers' model times t = σ·T (floats), as ``scheduler.timesteps`` holds them.

Prediction types (:data:`PREDICTION_TYPES`), on any schedule: ``epsilon`` (ε), ``v_prediction``
(v = α ε - σ x0 on the variance-preserving scale), ``sample`` (x0) and ``flow`` (the velocity v = ε - x0).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, NamedTuple, Union

import numpy as np
import torch

from .defaults import PLAN_GRID_END

__all__ = [
    "PREDICTION_TYPES", "Level", "CLEAN", "Schedule", "DiscreteVP", "FlowMatching", "flow_matching",
    "as_schedule", "from_scheduler", "check_alphas_cumprod", "check_grid_end", "spaced_timesteps",
    "make_alphas_cumprod",
    "to_denoised", "from_denoised", "calculate_shift", "Time", "VP_SPACINGS", "karras_noise_levels",
    "log_snr_noise_levels",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")

#: A grid time: an integer timestep (discrete VP) or a model time σ·T (flow matching).
Time = Union[int, float]


class Level(NamedTuple):
    """The mixture at one grid point: ``x = alpha·x0 + sigma·ε`` (floats, or tensors broadcastable
    against x for one level per sample)."""

    alpha: Any
    sigma: Any

    @property
    def log_snr(self) -> float:
        """λ = log(α/σ): -∞ at pure noise (α = 0), +∞ at clean data (σ = 0)."""
        if self.alpha == 0:
            return -math.inf
        if self.sigma == 0:
            return math.inf
        return math.log(self.alpha / self.sigma)

    @property
    def noise(self) -> float:
        """σ/α, the variance-exploding noise level (x/α = x0 + (σ/α) ε): ∞ at α = 0, 0 when clean."""
        return math.inf if self.alpha == 0 else self.sigma / self.alpha


#: Clean data, where every sampler ends: α = 1, σ = 0.
CLEAN = Level(1.0, 0.0)


def _as_level(level: Any) -> Level:
    """A :class:`Level`, or a VP ᾱ (float or tensor) as the level (√ᾱ, √(1-ᾱ))."""
    if isinstance(level, Level):
        return level
    return Level(level**0.5, (1.0 - level) ** 0.5)


def to_denoised(output: torch.Tensor, x: torch.Tensor, level: Level | float | torch.Tensor,
                prediction_type: str) -> torch.Tensor:
    """x̂0 from a network output at ``level`` (α, σ) — or at a VP ᾱ, the level (√ᾱ, √(1-ᾱ)):

    epsilon: x̂0 = (x - σ ε̂)/α;  v: x̂0 = α̃ x̃ - σ̃ v̂ with x̃, α̃, σ̃ = x, α, σ divided by √(α²+σ²)
    (Salimans & Ho 2022; the VP scale); sample: x̂0 = output; flow: v̂ = ε - x0 gives
    x̂0 = (x - σ v̂)/(α + σ), i.e. x - σ v̂ on a flow schedule (α + σ = 1).
    """
    a, s = _as_level(level)
    if prediction_type == "epsilon":
        return (x - s * output) / a
    if prediction_type == "v_prediction":
        r = (a * a + s * s) ** 0.5
        return a / r * (x / r) - s / r * output if not _is_one(r) else a * x - s * output
    if prediction_type == "sample":
        return output
    if prediction_type == "flow":
        return (x - s * output) / (a + s)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def from_denoised(denoised: torch.Tensor, x: torch.Tensor, level: Level | float | torch.Tensor,
                  prediction_type: str) -> torch.Tensor:
    """Inverse of :func:`to_denoised`: the network output that yields ``denoised`` at ``x``."""
    a, s = _as_level(level)
    if prediction_type == "sample":
        return denoised
    if prediction_type == "flow":
        return (x - (a + s) * denoised) / s
    eps = (x - a * denoised) / s
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        r = (a * a + s * s) ** 0.5
        return (a * eps - s * denoised) / r if not _is_one(r) else a * eps - s * denoised
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def _is_one(r: Any) -> bool:
    """True when ``r`` (a float or tensor of √(α²+σ²)) is 1 to float precision: the VP case, kept exact."""
    if isinstance(r, torch.Tensor):
        return bool(((r - 1).abs() < 1e-12).all())
    return abs(r - 1) < 1e-12


def _check_prediction_type(prediction_type: Any) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return prediction_type


class Schedule:
    """The interface of every schedule (see the module docstring); subclasses implement it.

    Grid helpers: :meth:`timesteps` (the vanilla N-step grid, as diffusers' scheduler makes it),
    :meth:`inner_timesteps` (a grid started at any time, for the inner runs of nested diffusion) and
    :meth:`at_noise_level` (the time of a variance-exploding noise level σ/α, for the planner).
    """

    num_train_timesteps: int
    #: how the grids are spaced (``replace(spacing=...)`` re-grids the same levels; "karras" and "logsnr" space
    #: the noise level σ/α on every schedule)
    spacing: str
    #: the noise level σ/α where "karras" and "logsnr" grids end (``None``: the schedule's own end; a level
    #: below the schedule's lowest ends there); the other spacings ignore it
    grid_end: float | None = None
    #: the prediction type of a model trained on this kind of schedule, when none is given
    default_prediction_type: str = "epsilon"

    # -- levels and the network's time ------------------------------------------------------------
    def level(self, t: Time) -> Level:
        raise NotImplementedError

    def model_time(self, t: Time, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The network's time input for grid time ``t``, shape ``(batch,)``."""
        raise NotImplementedError

    def levels(self, model_time: torch.Tensor) -> Level:
        """α and σ (float64 tensors) of a batch of network time inputs: the inverse of :meth:`model_time`."""
        raise NotImplementedError

    # -- grids ----------------------------------------------------------------------------------------
    @property
    def top(self) -> Time:
        """The first time of a full sampling run (the noisiest level)."""
        return self.timesteps(1)[0]

    def timesteps(self, steps: int) -> list:
        """The vanilla ``steps``-step grid, descending (the clean end follows the last point)."""
        raise NotImplementedError

    def inner_timesteps(self, start: Time, steps: int, power: float = 1.0) -> list:
        """At most ``steps`` descending grid times from ``start`` (the first) towards the clean end;
        ``power`` > 1 bends the grid towards the clean end. The cost of a run on it is its length."""
        raise NotImplementedError

    def capacity(self, start: Time) -> float:
        """How many distinct grid times lie at or below ``start`` (a run from it cannot cost more)."""
        raise NotImplementedError

    def lowest_start(self, steps: int) -> Time:
        """The lowest time from which a run of ``steps`` steps has room for all of them."""
        raise NotImplementedError

    def below(self, t: Time) -> Time | None:
        """The next lower time one training step down (``None`` at the bottom): how the planner keeps
        a grid strictly decreasing when two noise levels map to one time."""
        raise NotImplementedError

    def at_noise_level(self, noise: float) -> Time:
        """The largest time whose noise level σ/α is at most ``noise`` (the lowest time if none)."""
        raise NotImplementedError

    def check_times(self, times: Any, name: str = "outer_timesteps") -> list:
        """``times`` as a strictly decreasing list of valid grid times, or a ``ValueError`` naming ``name``."""
        raise NotImplementedError

    def check_prediction_type(self, prediction_type: Any) -> str:
        """A prediction type that gives x̂0 at every level of this schedule (ε cannot at α = 0)."""
        prediction_type = _check_prediction_type(prediction_type)
        if prediction_type == "epsilon" and self.level(self.top).alpha == 0:
            raise ValueError(f"prediction_type 'epsilon' cannot give x̂0 at pure noise (α = 0) on {self!r}: "
                             "use 'flow', 'v_prediction' or 'sample'")
        return prediction_type

    @property
    def max_steps(self) -> int | None:
        """The most steps a grid can have (``None``: unbounded)."""
        return None


# -- discrete VP ----------------------------------------------------------------------------------------
def check_alphas_cumprod(alphas_cumprod: Any) -> torch.Tensor:
    """Validate a training schedule and return it as a CPU float64 tensor.

    ᾱ must be 1-D with at least two entries, non-increasing in t, ᾱ_0 in (0, 1] and every value in
    [0, 1]; only the last may be 0 (a zero-terminal-SNR schedule: pure noise at T-1).
    """
    if not isinstance(alphas_cumprod, torch.Tensor):
        try:
            alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)  # Python floats are float64
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"alphas_cumprod must be a 1-D tensor, got {type(alphas_cumprod).__name__}") from e
    if alphas_cumprod.ndim != 1 or alphas_cumprod.numel() < 2:
        raise ValueError(f"alphas_cumprod must be a 1-D tensor of length T >= 2, got shape {tuple(alphas_cumprod.shape)}")
    if not (alphas_cumprod.is_floating_point()):
        raise TypeError(f"alphas_cumprod must be floating point, got {alphas_cumprod.dtype}")
    a = alphas_cumprod.detach().to("cpu", torch.float64)
    if not torch.isfinite(a).all() or (a[:-1] <= 0).any() or (a < 0).any() or (a > 1).any():
        raise ValueError(f"alphas_cumprod values must lie in (0, 1] (the last may be 0), got min "
                         f"{a.min().item():.3g}, max {a.max().item():.3g}")
    if (a[1:] > a[:-1]).any():
        raise ValueError("alphas_cumprod must be non-increasing in t (ᾱ_0 is the cleanest timestep)")
    return a


def spaced_timesteps(start: int, steps: int, power: float = 1.0) -> list[int]:
    """``steps`` integer timesteps from ``start`` down towards 0 (descending).

    The first is ``start`` itself; the grid is diffusers' "trailing" spacing generalised to any
    start: ``t_i = round((start + 1)(steps - i) / steps) - 1``, i = 0..steps-1, so with
    ``start = T - 1`` it equals ``DDIMScheduler(timestep_spacing="trailing")`` (e.g. 999, 899, …,
    99). ``power`` p > 1 bends it towards 0 like DDIM's "quadratic" selection (p = 2, Song et al.
    2021, App. D.2): ``t_i = round((start + 1)((steps - i) / steps)^p) - 1``, raised where needed so
    the timesteps stay distinct. At most ``start + 1`` timesteps are returned (all of them when
    ``steps > start``) — a sampler started at τ costs ``min(steps, τ + 1)`` network evaluations.
    """
    if steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if start < 0:
        raise ValueError(f"start must be a non-negative timestep, got {start}")
    if not power >= 1.0:
        raise ValueError(f"power must be >= 1 (1: evenly spaced), got {power}")
    if steps > start:
        return list(range(start, -1, -1))
    grid = [max(0, round((start + 1) * (steps - i) ** power / steps ** power) - 1) for i in range(steps)]
    for i in range(steps - 2, -1, -1):  # bottom-up: at least one timestep apart
        grid[i] = max(grid[i], grid[i + 1] + 1)
    return grid


def make_alphas_cumprod(schedule: str = "linear", num_train_timesteps: int = 1000) -> torch.Tensor:
    """ᾱ_t (float64) for the standard training schedules, as diffusers defines them.

    ``"linear"``: β from 1e-4 to 0.02 (Ho et al. 2020). ``"scaled_linear"``: √β linear from
    √0.00085 to √0.012 (Stable Diffusion). ``"cosine"``: ``squaredcos_cap_v2`` (Nichol & Dhariwal
    2021, eq. 17, β capped at 0.999).
    """
    T = num_train_timesteps
    if T < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {T}")
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
    elif schedule == "cosine":
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    else:
        raise ValueError(f"schedule must be 'linear', 'scaled_linear' or 'cosine', got {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


def karras_noise_levels(high: float, low: float, steps: int, rho: float = 7.0) -> list[float]:
    """``steps`` noise levels σ/α from ``high`` down to ``low``, evenly spaced in (σ/α)^(1/ρ) (Karras et al.
    2022, eq. 5; diffusers' ``use_karras_sigmas``, ρ = 7)."""
    a, b = high ** (1.0 / rho), low ** (1.0 / rho)
    return [high] if steps == 1 else [(a + i / (steps - 1) * (b - a)) ** rho for i in range(steps)]


def log_snr_noise_levels(high: float, low: float, steps: int) -> list[float]:
    """``steps`` noise levels σ/α from ``high`` down to ``low``, evenly spaced in λ = -log(σ/α) (Lu et al.
    2022's uniform-log-SNR grid; diffusers' ``use_lu_lambdas``)."""
    a, b = math.log(high), math.log(low)
    return [high] if steps == 1 else [math.exp(a + i / (steps - 1) * (b - a)) for i in range(steps)]


def noise_spaced_levels(spacing: str, high: float, low: float, steps: int, rho: float = 7.0) -> list[float]:
    """The ``"karras"`` (ρ = ``rho``) or ``"logsnr"`` grid of ``steps`` noise levels from ``high`` to ``low``."""
    if spacing == "karras":
        return karras_noise_levels(high, low, steps, rho)
    return log_snr_noise_levels(high, low, steps)


def check_grid_end(grid_end: Any, name: str = "grid_end") -> float | None:
    """``grid_end`` as a float, or ``None``; a ``ValueError`` naming ``name`` unless it is a positive, finite
    noise level σ/α."""
    if grid_end is None:
        return None
    if isinstance(grid_end, bool) or not isinstance(grid_end, (int, float)) or not 0 < grid_end < math.inf:
        raise ValueError(f"{name} must be a positive noise level σ/α (or None: the schedule's own end), "
                         f"got {grid_end!r}")
    return float(grid_end)


def _check_unbent(spacing: str, power: float) -> None:
    """A noise-spaced grid has its own spacing: ``power`` (which bends trailing grids) must be 1."""
    if power != 1.0:
        raise ValueError(f"power bends the trailing grid; a {spacing!r} grid has its own spacing (power 1)")


def _check_rho(rho: Any) -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not rho > 0 or not math.isfinite(rho):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    return rho


#: How a discrete VP schedule spaces its grids: "trailing" in t (diffusers' DDIM/DPM-Solver ``"trailing"``,
#: the default), or in the noise level σ/α from the start's down to ᾱ_0's, as "karras" (ρ = ``rho``) or
#: "logsnr" (uniform in log-SNR) — the noise levels rounded to the nearest timestep in log σ/α, as
#: diffusers' ``_sigma_to_t``, and kept strictly decreasing; they end at ``grid_end`` if given.
VP_SPACINGS = ("trailing", "karras", "logsnr")


class DiscreteVP(Schedule):
    """A DDPM training table ᾱ_t, t = 0..T-1: level (√ᾱ_t, √(1-ᾱ_t)), integer timesteps.

    Grids follow ``spacing`` (:data:`VP_SPACINGS`): by default diffusers' "trailing" spacing
    (:func:`spaced_timesteps`), so the vanilla N-step grid equals ``DDIMScheduler(timestep_spacing=
    "trailing")``; ``"karras"`` (ρ = ``rho``) and ``"logsnr"`` space the noise level σ/α instead, from the
    start's (T-1's for the vanilla grid) to t = 0's, as diffusers' ``use_karras_sigmas`` / ``use_lu_lambdas``
    timesteps. ``grid_end`` (a noise level σ/α) ends those two grids higher, at the timestep nearest it in
    log σ/α (the plan's inner runs: :data:`~nested_diffusion.defaults.PLAN_GRID_END`). Any run started at τ
    has at most τ + 1 timesteps.
    """

    default_prediction_type = "epsilon"

    def __init__(self, alphas_cumprod: Any, *, spacing: str = "trailing", rho: float = 7.0,
                 grid_end: float | None = None) -> None:
        if spacing not in VP_SPACINGS:
            raise ValueError(f"spacing must be one of {VP_SPACINGS}, got {spacing!r}")
        _check_rho(rho)
        a = self.alphas_cumprod = check_alphas_cumprod(alphas_cumprod)
        self.spacing, self.rho, self.grid_end = spacing, float(rho), check_grid_end(grid_end)
        self.num_train_timesteps = len(a)
        # IEEE square roots are correctly rounded: the same values as math.sqrt of each entry
        self._alpha, self._sigma = a.sqrt(), (1.0 - a).sqrt()
        self._levels = [Level(alpha, sigma) for alpha, sigma in zip(self._alpha.tolist(), self._sigma.tolist())]
        # σ/α as √((1-ᾱ)/ᾱ), non-decreasing in t (the planner compares measured levels with it)
        self._noise = ((1.0 - a) / a).sqrt().tolist()

    def __repr__(self) -> str:
        how = "" if self.spacing == "trailing" else f", spacing={self.spacing!r}" + (
            f", rho={self.rho:g}" if self.spacing == "karras" else "")
        end = "" if self.grid_end is None else f", grid_end={self.grid_end:g}"
        return f"DiscreteVP(T={self.num_train_timesteps}{how}{end})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, DiscreteVP) and torch.equal(self.alphas_cumprod, other.alphas_cumprod)
                and (self.spacing, self.rho, self.grid_end) == (other.spacing, other.rho, other.grid_end))

    def replace(self, **changes: Any) -> "DiscreteVP":
        """A copy with ``spacing``, ``rho`` and/or ``grid_end`` changed, e.g. ``replace(spacing="karras")`` (same
        table, same levels: only the grids differ)."""
        unknown = set(changes) - {"spacing", "rho", "grid_end"}
        if unknown:
            raise ValueError(f"a DiscreteVP schedule can replace spacing, rho and grid_end, not {sorted(unknown)}")
        return DiscreteVP(self.alphas_cumprod, **{"spacing": self.spacing, "rho": self.rho,
                                                  "grid_end": self.grid_end, **changes})

    def _time_of(self, noise: float) -> float:
        """The fractional timestep of noise level σ/α: linear in log σ/α between table entries (diffusers'
        ``_sigma_to_t``), clamped to [0, T-1]."""
        table = self._noise
        if noise <= table[0]:
            return 0.0
        i = bisect.bisect_right(table, noise) - 1
        if i >= len(table) - 1 or math.isinf(table[i + 1]):
            return float(i if i < len(table) - 1 else len(table) - 1)
        lo, hi = math.log(table[i]), math.log(table[i + 1])
        return i + (math.log(noise) - lo) / (hi - lo)

    def _noise_spaced(self, start: int, steps: int) -> list[int]:
        """A Karras or log-SNR grid of ``steps`` timesteps from ``start`` down to t = 0 (or ``grid_end``'s
        level, where it is higher and below the start's)."""
        if steps > start:
            return list(range(start, -1, -1))
        high, low = self._noise[start], self._noise[0]
        if self.grid_end is not None and low < self.grid_end < high:
            low = self.grid_end
        if math.isinf(high):
            raise ValueError(f"a {self.spacing!r} grid spaces σ/α from the start's noise level, which is infinite "
                             f"at t = {start} of this zero-terminal-SNR table: start lower or use spacing='trailing'")
        levels = noise_spaced_levels(self.spacing, high, low, steps, self.rho)
        grid = [start] + [int(round(self._time_of(v))) for v in levels[1:]]
        for i in range(1, steps):  # strictly decreasing: top-down below the start, then bottom-up above 0
            grid[i] = min(grid[i], grid[i - 1] - 1)
        grid[-1] = max(grid[-1], 0)
        for i in range(steps - 2, 0, -1):
            grid[i] = max(grid[i], grid[i + 1] + 1)
        return grid

    __hash__ = None  # type: ignore[assignment]

    def level(self, t: Time) -> Level:
        return self._levels[t]

    def model_time(self, t: Time, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.full((batch,), t, dtype=torch.long, device=device)

    def levels(self, model_time: torch.Tensor) -> Level:
        index = model_time.detach().long().cpu()
        return Level(self._alpha[index], self._sigma[index])

    @property
    def top(self) -> int:
        return self.num_train_timesteps - 1

    @property
    def max_steps(self) -> int:
        return self.num_train_timesteps

    def timesteps(self, steps: int) -> list[int]:
        return self.inner_timesteps(self.num_train_timesteps - 1, steps)

    def inner_timesteps(self, start: Time, steps: int, power: float = 1.0) -> list[int]:
        if self.spacing == "trailing":
            return spaced_timesteps(int(start), steps, power)
        _check_positive(steps, "steps")
        _check_unbent(self.spacing, power)
        if not 0 <= int(start) < self.num_train_timesteps:
            raise ValueError(f"start must be a timestep in [0, {self.num_train_timesteps - 1}], got {start}")
        return self._noise_spaced(int(start), steps)

    def capacity(self, start: Time) -> float:
        return int(start) + 1

    def lowest_start(self, steps: int) -> int:
        return steps - 1

    def below(self, t: Time) -> int | None:
        return int(t) - 1 if t > 0 else None

    def at_noise_level(self, noise: float) -> int:
        return max((i for i, v in enumerate(self._noise) if v <= noise), default=0)

    def check_times(self, times: Any, name: str = "outer_timesteps") -> list[int]:
        T = self.num_train_timesteps
        try:
            values = list(times)
        except TypeError:
            raise TypeError(f"{name} must be a sequence of integers, got {type(times).__name__}") from None
        if not values or any(isinstance(t, bool) or not isinstance(t, int) for t in values):
            raise TypeError(f"{name} must be a non-empty sequence of integers, got {times!r}")
        if any(not 0 <= t <= T - 1 for t in values) or any(a <= b for a, b in zip(values, values[1:])):
            raise ValueError(f"{name} must decrease strictly within [0, {T - 1}] (the training timesteps), got {values}")
        return values


# -- flow matching --------------------------------------------------------------------------------------
def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5,
                    max_shift: float = 1.15) -> float:
    """The dynamic shift μ of Flux/SD3.5 pipelines: linear in the number of latent tokens, from
    ``base_shift`` at ``base_seq_len`` to ``max_shift`` at ``max_seq_len`` (diffusers' ``calculate_shift``)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    b = base_shift - m * base_seq_len
    return image_seq_len * m + b


#: How a flow schedule spaces its grids: the vanilla grid as diffusers' schedulers and pipelines make it
#: ("linspace", "trailing", "dpmsolver"; inner runs trailing in the unshifted time), or — as on a VP schedule
#: (:data:`VP_SPACINGS`) — in the noise level σ/α = σ/(1-σ), "karras" (ρ = ``rho``) or "logsnr", from the
#: start's down to ``grid_end`` (default :data:`FLOW_NOISE_GRID_END`; runs that start below σ = 1: restarts, edits).
SPACINGS = ("linspace", "trailing", "dpmsolver", "karras", "logsnr")
NOISE_SPACINGS = ("karras", "logsnr")
#: Where a flow schedule's Karras and log-SNR grids end by default: σ/α = 0.03 (Stable Diffusion's t = 0 level,
#: where diffusers' Karras grids for SD end; the plan's grid end, for the same reason), or the smallest training σ
#: if that is higher. A flow schedule's own smallest σ (0.001 at shift 1, 0.009 at shift 3) spends a grid's last
#: steps where nothing is left to denoise: on flow shift 2 a budget-50 plan's frames went from 0.016-0.020 to the
#: floor, 0.015 (BENCHMARKS.md §12).
FLOW_NOISE_GRID_END = PLAN_GRID_END
TIME_SHIFT_TYPES = ("exponential", "linear")


class FlowMatching(Schedule):
    """Rectified flow: level (1-σ, σ), σ ∈ (0, 1]; grid times are model times t = σ·T (floats).

    The arguments are diffusers' ``FlowMatchEulerDiscreteScheduler`` config and mean what they mean
    there: an unshifted time u ∈ (0, 1] becomes σ = shift·u / (1 + (shift-1)·u); with
    ``use_dynamic_shifting`` σ = e^μ / (e^μ + 1/u - 1) (``time_shift_type="exponential"``) or
    μ / (μ + 1/u - 1) (``"linear"``), μ = ``mu`` (size-dependent: :meth:`at_image_seq_len`); then, with
    ``shift_terminal``, 1-σ is stretched so the grid ends at σ = shift_terminal.

    ``spacing`` says how the vanilla N-step grid spaces u: ``"linspace"`` as ``set_timesteps(N)`` does
    (u from σ_max to σ_min of the scheduler's training sigmas, the default; SD3), ``"trailing"``
    u_i = (N-i)/N as ``FluxPipeline`` passes its sigmas, ``"dpmsolver"`` u_i = (1-1/T)(N-i)/N as
    ``DPMSolverMultistepScheduler(use_flow_sigmas=True)`` makes them (Sana). Inner grids from a start σ
    are trailing in u from that σ's u down (:meth:`inner_timesteps`). σ values of the vanilla grid are
    rounded to float32 as diffusers' schedulers hold them.
    """

    default_prediction_type = "flow"

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, *, use_dynamic_shifting: bool = False,
                 base_shift: float = 0.5, max_shift: float = 1.15, base_image_seq_len: int = 256,
                 max_image_seq_len: int = 4096, time_shift_type: str = "exponential",
                 shift_terminal: float | None = None, mu: float | None = None, spacing: str = "linspace",
                 rho: float = 7.0, grid_end: float | None = None) -> None:
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {num_train_timesteps!r}")
        for name, value in (("shift", shift), ("base_shift", base_shift), ("max_shift", max_shift)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift!r}")
        if time_shift_type not in TIME_SHIFT_TYPES:
            raise ValueError(f"time_shift_type must be one of {TIME_SHIFT_TYPES}, got {time_shift_type!r}")
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        if mu is not None and (isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu)):
            raise ValueError(f"mu must be a finite number, got {mu!r}")
        if mu is not None and not use_dynamic_shifting:
            raise ValueError("mu is the dynamic shift: it needs use_dynamic_shifting=True")
        if use_dynamic_shifting and time_shift_type == "linear" and mu is not None and not mu > 0:
            raise ValueError(f"a linear time shift needs mu > 0, got {mu!r}")
        if shift_terminal is not None:
            if isinstance(shift_terminal, bool) or not isinstance(shift_terminal, (int, float)) \
                    or not 0 < shift_terminal < 1:
                raise ValueError(f"shift_terminal must lie in (0, 1), got {shift_terminal!r}")
            if spacing in ("trailing", "dpmsolver"):
                raise ValueError("shift_terminal stretches the grid to its last σ: it needs spacing='linspace' "
                                 "(or a noise-spaced grid, 'karras' or 'logsnr')")
        self.rho, self.grid_end = float(_check_rho(rho)), check_grid_end(grid_end)
        self.num_train_timesteps = T = num_train_timesteps
        self.shift, self.use_dynamic_shifting, self.mu = float(shift), bool(use_dynamic_shifting), mu
        self.base_shift, self.max_shift = float(base_shift), float(max_shift)
        self.base_image_seq_len, self.max_image_seq_len = int(base_image_seq_len), int(max_image_seq_len)
        self.time_shift_type, self.shift_terminal, self.spacing = time_shift_type, shift_terminal, spacing
        # the scheduler's training sigmas (float32, as its __init__ makes them): u from 1/T to 1, shifted
        # here only for a static shift
        train = torch.from_numpy(np.linspace(1, T, T, dtype=np.float32)[::-1].copy()) / T
        if not self.use_dynamic_shifting:
            train = self.shift * train / (1 + (self.shift - 1) * train)
        self._u_max = (1 - 1 / T) if spacing == "dpmsolver" else train[0].item()
        self._u_min = train[-1].item()
        self._stretch: float | None = None
        if shift_terminal is not None:  # 1-σ scaled so that the grid's last σ (at u_min) is shift_terminal
            self._stretch = (1 - self._shifted(self._u_min)) / (1 - shift_terminal)

    def __repr__(self) -> str:
        how = (f"dynamic {self.time_shift_type} shift, mu={self.mu}" if self.use_dynamic_shifting
               else f"shift={self.shift:g}")
        rho = f", rho={self.rho:g}" if self.spacing == "karras" else ""
        end = "" if self.grid_end is None else f", grid_end={self.grid_end:g}"
        return f"FlowMatching({how}, T={self.num_train_timesteps}, spacing={self.spacing!r}{rho}{end})"

    def _config(self) -> dict[str, Any]:
        return dict(num_train_timesteps=self.num_train_timesteps, shift=self.shift,
                    use_dynamic_shifting=self.use_dynamic_shifting, base_shift=self.base_shift,
                    max_shift=self.max_shift, base_image_seq_len=self.base_image_seq_len,
                    max_image_seq_len=self.max_image_seq_len, time_shift_type=self.time_shift_type,
                    shift_terminal=self.shift_terminal, mu=self.mu, spacing=self.spacing, rho=self.rho,
                    grid_end=self.grid_end)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlowMatching) and self._config() == other._config()

    __hash__ = None  # type: ignore[assignment]

    def replace(self, **changes: Any) -> "FlowMatching":
        """A copy with some arguments changed, e.g. ``replace(spacing="trailing")``, ``replace(spacing="karras")``
        or ``replace(mu=0.8)``."""
        return FlowMatching(**{**self._config(), **changes})

    def at_image_seq_len(self, image_seq_len: int) -> "FlowMatching":
        """This schedule for images of ``image_seq_len`` latent tokens: μ = :func:`calculate_shift` with
        the scheduler's base/max shift and sequence lengths (as Flux and SD3.5 pipelines compute it); a
        static shift is returned unchanged."""
        if not self.use_dynamic_shifting:
            return self
        return self.replace(mu=calculate_shift(image_seq_len, self.base_image_seq_len, self.max_image_seq_len,
                                            self.base_shift, self.max_shift))

    # -- the shift --------------------------------------------------------------------------------
    def _need_mu(self) -> float:
        if self.mu is None:
            raise ValueError(f"{self!r} needs mu (its dynamic shift) before it makes a grid: use "
                             "at_image_seq_len(n) or replace(mu=...)")
        return float(self.mu)

    def _shifted(self, u: Any) -> Any:
        """σ(u) before the terminal stretch (numpy or float arithmetic, as diffusers does it)."""
        if self.use_dynamic_shifting:
            mu = self._need_mu()
            if self.time_shift_type == "exponential":
                return math.exp(mu) / (math.exp(mu) + (1 / u - 1))
            return mu / (mu + (1 / u - 1))
        return self.shift * u / (1 + (self.shift - 1) * u)

    def _sigma(self, u: Any) -> Any:
        sigma = self._shifted(u)
        if self._stretch is not None:
            sigma = 1 - (1 - sigma) / self._stretch
        return sigma

    def _unshifted(self, sigma: float) -> float:
        """u(σ), the inverse of :meth:`_sigma`."""
        if self._stretch is not None:
            sigma = 1 - (1 - sigma) * self._stretch
        if sigma >= 1:
            return 1.0
        if self.use_dynamic_shifting:
            mu = self._need_mu()
            k = math.exp(mu) if self.time_shift_type == "exponential" else mu
            return 1 / (1 + k * (1 / sigma - 1))
        return sigma / (self.shift - (self.shift - 1) * sigma)

    # -- levels and the network's time ------------------------------------------------------------
    def level(self, t: Time) -> Level:
        sigma = float(t) / self.num_train_timesteps
        return Level(1.0 - sigma, sigma)

    def model_time(self, t: Time, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.full((batch,), float(t), dtype=torch.float32, device=device)

    def levels(self, model_time: torch.Tensor) -> Level:
        sigma = model_time.detach().to("cpu", torch.float64) / self.num_train_timesteps
        return Level(1.0 - sigma, sigma)

    # -- grids ----------------------------------------------------------------------------------------
    def _times(self, sigmas: Any) -> list[float]:
        """Model times σ·T of float32 σ values (exact in float64, so t/T gives σ back)."""
        return [float(s) * self.num_train_timesteps for s in np.asarray(sigmas, dtype=np.float32).tolist()]

    @property
    def top(self) -> float:
        return self._times([self._sigma(self._u_max)])[0]

    def timesteps(self, steps: int) -> list[float]:
        """σ grid of ``set_timesteps(steps)`` (``"linspace"``) or of ``FluxPipeline`` (``"trailing"``), as
        model times."""
        _check_positive(steps, "steps")
        T = self.num_train_timesteps
        if self.spacing in NOISE_SPACINGS:
            return self._noise_spaced(self.top, steps)
        if self.spacing == "linspace":  # diffusers: timesteps linspace(σ_max·T, σ_min·T, N), σ = t/T, shifted
            u = np.linspace(self._u_max * T, self._u_min * T, steps) / T
            return self._times(self._sigma(u))
        if self.spacing == "trailing":  # FluxPipeline: sigmas = linspace(1, 1/N, N), cast to float32, then shifted
            u = np.linspace(self._u_max, self._u_max / steps, steps).astype(np.float32)
            return self._times(self._sigma(u))
        # DPMSolverMultistepScheduler(use_flow_sigmas=True): 1 - linspace(1, 1/T, N+1), shifted in float64, flipped
        u = 1.0 - np.linspace(1, 1 / self.num_train_timesteps, steps + 1)
        return self._times(np.flip(self._sigma(u[1:])).copy())

    def inner_timesteps(self, start: Time, steps: int, power: float = 1.0) -> list[float]:
        """``steps`` times from ``start``, trailing in the unshifted time whatever the vanilla spacing:
        u_i = u(σ_start)((M-i)/M)^p, shifted — the continuous form of the VP trailing grid (a run ends one
        M-th of the way from the clean end, never on the vanilla "linspace" grid's tiny last interval, which
        multistep solvers extrapolate badly). From the top of a ``"trailing"`` schedule it is the vanilla grid."""
        _check_positive(steps, "steps")
        if self.spacing in NOISE_SPACINGS:
            _check_unbent(self.spacing, power)
            return self._noise_spaced(start, steps)
        if not power >= 1.0:
            raise ValueError(f"power must be >= 1 (1: evenly spaced), got {power}")
        if float(start) == self.top and power == 1.0 and self.spacing == "trailing":
            return self.timesteps(steps)
        u0 = self._unshifted(float(start) / self.num_train_timesteps)
        u = [u0 * ((steps - i) / steps) ** power for i in range(1, steps)]
        return [float(start)] + [float(self._sigma(v)) * self.num_train_timesteps for v in u]

    def _noise_spaced(self, start: Time, steps: int) -> list[float]:
        """A Karras or log-SNR grid of ``steps`` model times from ``start`` down to σ/α = ``grid_end``
        (default :data:`FLOW_NOISE_GRID_END`; the smallest training σ's level, if higher), spaced in σ/α =
        σ/(1-σ) (:func:`karras_noise_levels`, :func:`log_snr_noise_levels`)."""
        T = self.num_train_timesteps
        end_noise = FLOW_NOISE_GRID_END if self.grid_end is None else self.grid_end
        end = end_noise / (1.0 + end_noise)
        sigma, lowest = float(start) / T, max(float(self._sigma(self._u_min)), end)
        if sigma >= 1.0:
            raise ValueError(f"a {self.spacing!r} grid spaces σ/α from the start's noise level, which is infinite "
                             f"at σ = 1: start lower (a restart or an edit) or use spacing='trailing'")
        if not sigma > lowest:
            raise ValueError(f"a {self.spacing!r} grid runs from the start down to σ = {lowest:.4g}: start must be "
                             f"above σ·T = {lowest * T:.4g}, got {float(start):g}")
        high, low = sigma / (1.0 - sigma), lowest / (1.0 - lowest)
        levels = noise_spaced_levels(self.spacing, high, low, steps, self.rho)
        return [float(start)] + [v / (1.0 + v) * T for v in levels[1:]]

    def capacity(self, start: Time) -> float:
        return math.inf

    def lowest_start(self, steps: int) -> float:
        return 0.0

    def below(self, t: Time) -> float | None:
        return float(t) - 1.0 if t > 1.0 else None

    def at_noise_level(self, noise: float) -> float:
        """σ/(1-σ) = noise, i.e. σ = noise/(1+noise) (exact: the flow grid is continuous)."""
        if math.isinf(noise):
            return self.top
        return min(self.top, noise / (1.0 + noise) * self.num_train_timesteps)

    def check_times(self, times: Any, name: str = "outer_timesteps") -> list[float]:
        T = self.num_train_timesteps
        try:
            values = list(times)
        except TypeError:
            raise TypeError(f"{name} must be a sequence of numbers, got {type(times).__name__}") from None
        if not values or any(isinstance(t, bool) or not isinstance(t, (int, float)) for t in values):
            raise TypeError(f"{name} must be a non-empty sequence of model times σ·{T}, got {times!r}")
        values = [float(t) for t in values]
        if any(not 0 < t <= T for t in values) or any(a <= b for a, b in zip(values, values[1:])):
            raise ValueError(f"{name} must decrease strictly within (0, {T}] (model times σ·{T}), got {values}")
        return values


def flow_matching(shift: float = 1.0, *, num_train_timesteps: int = 1000, use_dynamic_shifting: bool = False,
                  mu: float | None = None, base_shift: float = 0.5, max_shift: float = 1.15,
                  base_image_seq_len: int = 256, max_image_seq_len: int = 4096,
                  time_shift_type: str = "exponential", shift_terminal: float | None = None,
                  spacing: str = "linspace", rho: float = 7.0, grid_end: float | None = None) -> FlowMatching:
    """A rectified-flow schedule (see :class:`FlowMatching`), e.g. ``flow_matching(3.0)`` for SD3 or
    ``flow_matching(use_dynamic_shifting=True, spacing="trailing").at_image_seq_len(4096)`` for Flux at
    1024²; models on it predict ``prediction_type="flow"`` (v = ε - x0) by default."""
    return FlowMatching(num_train_timesteps, shift, use_dynamic_shifting=use_dynamic_shifting, base_shift=base_shift,
                        max_shift=max_shift, base_image_seq_len=base_image_seq_len,
                        max_image_seq_len=max_image_seq_len, time_shift_type=time_shift_type,
                        shift_terminal=shift_terminal, mu=mu, spacing=spacing, rho=rho, grid_end=grid_end)


def _check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


# -- from what users have --------------------------------------------------------------------------------
_RECENT: list[tuple[Any, tuple, DiscreteVP]] = []  # the last ᾱ tensors seen, so a table is checked once


def as_schedule(value: Any) -> Schedule:
    """A :class:`Schedule` as it is; a 1-D ᾱ tensor (or sequence) as :class:`DiscreteVP` (the same object for
    the same, unmodified tensor: entry points that each receive the table do not rebuild it)."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, torch.Tensor):
        key = (value.data_ptr(), value._version, tuple(value.shape), value.dtype, value.device)
        for tensor, seen, schedule in _RECENT:
            if tensor is value and seen == key:
                return schedule
        schedule = DiscreteVP(value)
        _RECENT.insert(0, (value, key, schedule))
        del _RECENT[8:]
        return schedule
    return DiscreteVP(value)


_PREDICTION_NAMES = {"flow_prediction": "flow"}


def from_scheduler(scheduler: Any) -> tuple[Schedule, str]:
    """``(schedule, prediction_type)`` of a loaded diffusers scheduler.

    ``FlowMatchEulerDiscreteScheduler`` (and schedulers with its config) → :class:`FlowMatching` with the
    same config; ``DPMSolverMultistepScheduler(use_flow_sigmas=True)`` → flow matching on its grid;
    schedulers with ``alphas_cumprod`` (DDPM, DDIM, DPM-Solver, Euler, UniPC …) → :class:`DiscreteVP`.
    Anything else is a ``ValueError`` naming what is supported.
    """
    config = getattr(scheduler, "config", {}) or {}
    get = config.get if hasattr(config, "get") else (lambda k, d=None: getattr(config, k, d))
    name = type(scheduler).__name__
    if name.startswith("FlowMatch"):
        if get("use_karras_sigmas") or get("use_exponential_sigmas") or get("use_beta_sigmas") or get("invert_sigmas"):
            raise ValueError(f"{name} with Karras, exponential, beta or inverted sigmas is not supported: nested "
                             "diffusion reads the plain flow-matching schedule (shift, dynamic shift, shift_terminal)")
        schedule = FlowMatching(int(get("num_train_timesteps", 1000)), float(get("shift", 1.0) or 1.0),
                                use_dynamic_shifting=bool(get("use_dynamic_shifting", False)),
                                base_shift=float(get("base_shift", 0.5) or 0.5),
                                max_shift=float(get("max_shift", 1.15) or 1.15),
                                base_image_seq_len=int(get("base_image_seq_len", 256) or 256),
                                max_image_seq_len=int(get("max_image_seq_len", 4096) or 4096),
                                time_shift_type=get("time_shift_type", "exponential") or "exponential",
                                shift_terminal=get("shift_terminal"))
        return schedule, "flow"
    if get("use_flow_sigmas", False):
        T = int(get("num_train_timesteps", 1000))
        if get("use_dynamic_shifting", False):  # set_timesteps(mu=...) makes flow_shift = e^μ: the exponential shift
            schedule = FlowMatching(T, use_dynamic_shifting=True, spacing="dpmsolver")
        else:
            schedule = FlowMatching(T, float(get("flow_shift", 1.0)), spacing="dpmsolver")
        return schedule, _PREDICTION_NAMES.get(get("prediction_type", "flow_prediction"),
                                               get("prediction_type", "flow_prediction"))
    ac = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(ac, torch.Tensor):
        raise ValueError(f"scheduler {name} has neither alphas_cumprod nor a flow-matching config: nested diffusion "
                         "needs a VP (DDPM-type) schedule, e.g. DDIMScheduler, or FlowMatchEulerDiscreteScheduler")
    prediction_type = _PREDICTION_NAMES.get(get("prediction_type", "epsilon"), get("prediction_type", "epsilon"))
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"scheduler prediction_type {prediction_type!r} is not supported; "
                         f"expected one of {PREDICTION_TYPES}")
    return DiscreteVP(ac.detach().to("cpu", torch.float64)), prediction_type
