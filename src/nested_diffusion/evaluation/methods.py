"""What an evaluation compares: nested configurations, vanilla x̂0 previews and the envelope.

A :class:`Method` is a frozen description; its :attr:`~Method.name` is the row label in
``results.csv`` (``nested-…``, ``vanilla-…``, ``envelope-…``) and the folder of its cached shards.
Spec strings, as the command line takes them::

    nested    OUTERxINNER[:SAMPLER[:ETA[:OUTER]]][@TAUS]  10x10, 20x5:dpmpp-2m, 5x20:ddim:0.5,
                                                         4x40/30/20/10 (one inner count per outer step),
                                                         3x10/10/20:dpmpp-2m:0/0.85/0.85:renoise@999/300/80
              ETA: one inner η, or one per outer step; OUTER: the outer η (DDIM outer step) or
              ``renoise``; TAUS: the outer times (default: the schedule's grid; integer timesteps
              on a VP schedule, model times σ·T on a flow schedule, e.g. @1000/600/250)
    nested    plan                                       the project default for the budget and the
                                                         model's schedule (:func:`~nested_diffusion.planner.plan_layout`)

Any spec may end in ``~GRID``: the runs use the model's schedule with that grid spacing
(``schedule.replace(spacing=GRID)``) — on a discrete VP schedule ``karras`` (ρ = 7) or ``logsnr``
(uniform in log-SNR) instead of ``trailing``, e.g. ``envelope unipc~karras``; on a flow schedule
``trailing`` or ``linspace``, or ``karras`` / ``logsnr`` for runs that start below σ = 1 (the restarts of a
nested spec: ``~linspace/karras/karras``). A nested spec takes one grid for every inner run or one per outer step
(``nested 3x2/4/4:unipc:0:renoise@999/300/60~trailing/logsnr/logsnr``; ``plan~logsnr`` re-grids the plan).
``~GRID:END`` also ends the Karras and log-SNR grids at the noise level σ/α = END (``replace(grid_end=END)``),
e.g. ``envelope unipc~logsnr:0.03`` (the plan's inner runs end at 0.03, ``PLAN_GRID_END``).

On a flow schedule the sampler ``ddim`` with η = 0 is Euler on the velocity (``vanilla ddim:0`` are
Euler's x̂0 previews).
    vanilla   SAMPLER[:ETA]                              ddim:1, dpmpp-2m   (budget steps, x̂0 previews)
    envelope  SAMPLER[:ETA]                              dpmpp-2m:0          (one run of exactly N steps
                                                                              per checkpoint N)

On a restoration target (``evaluate --task``) the sampler ``ddrm`` names DDRM (Kawar et al. 2022):
``nested 6x10/10/10/20/25/25:ddrm:0.95:0.5`` is nested DDRM (inner η, outer η), ``vanilla ddrm:0.85``
DDRM's x̂0 previews, ``envelope ddrm:0.85`` exact-N DDRM runs; a nested spec with the
``dpmpp-2m`` sampler there is the unconditional-inner (PSC) variant.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..defaults import (DEFAULT_DDRM_ETA, DEFAULT_INNER_ETA, DEFAULT_OUTER_ETA, DEFAULT_RESTORE_INNER_ETA,
                        DEFAULT_RESTORE_OUTER_ETA)
from ..samplers import SAMPLERS, make_sampler
from ..nested import OUTER_UPDATES, nested_grids
from ..schedules import Time, check_grid_end

__all__ = ["Method", "parse_method", "plan_method", "KINDS", "frame_at", "DDRM"]

KINDS = ("nested", "vanilla", "envelope")
#: η when a spec names none: the nested inner default, DDIM η = 1 for vanilla previews (what
#: `vanilla_sample` uses), and the ODE solvers for the envelope's exact-N runs.
_DEFAULT_ETA = {"nested": DEFAULT_INNER_ETA, "vanilla": 1.0, "envelope": 0.0}
#: the restoration sampler: valid on restoration targets only (their η defaults: the measured ones)
DDRM = "ddrm"
_DDRM_ETA = {"nested": DEFAULT_RESTORE_INNER_ETA, "vanilla": DEFAULT_DDRM_ETA, "envelope": DEFAULT_DDRM_ETA}


@dataclass(frozen=True)
class Method:
    """One curve of an anytime evaluation.

    ``kind="nested"``: ``outer_steps`` × ``inner_steps`` (one entry per outer step) with the inner
    ``sampler``/``eta``, the ``outer_update`` (DDIM with ``outer_eta``, or ``"renoise"``) and the outer
    grid ``outer_timesteps`` (empty: uniform). ``kind="vanilla"``: ``sampler``/``eta`` with
    ``steps`` network calls, frames are x̂0 previews. ``kind="envelope"``: for each checkpoint N a
    separate, non-anytime ``sampler`` run of exactly N steps (what knowing the budget buys).
    """

    kind: str
    sampler: str = "ddim"
    eta: float | tuple[float, ...] = 0.0
    outer_steps: int = 0
    inner_steps: tuple[int, ...] = ()
    outer_eta: float = DEFAULT_OUTER_ETA
    steps: int = 0
    outer_update: str = "ddim"
    outer_timesteps: tuple[Time, ...] = ()
    grid: str = ""
    grid_end: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method kind must be one of {KINDS}, got {self.kind!r}")
        etas = self.eta if isinstance(self.eta, tuple) else (self.eta,)
        for eta in etas:  # validates name and η
            if self.sampler == DDRM:
                make_sampler("ddim", eta, argument=f"{self.kind} ddrm")  # η in [0, 1]
            else:
                make_sampler(self.sampler, eta, argument=f"{self.kind} sampler")
        if isinstance(self.eta, tuple) and (self.kind != "nested" or len(self.eta) != self.outer_steps):
            raise ValueError(f"one η per outer step is for nested methods ({self.outer_steps} outer steps), "
                             f"got {list(self.eta)}")
        if self.kind == "nested":
            if self.outer_steps < 1 or len(self.inner_steps) != self.outer_steps or min(self.inner_steps) < 1:
                raise ValueError(f"nested method needs outer_steps >= 1 and one inner count >= 1 per outer step, "
                                 f"got {self.outer_steps} × {list(self.inner_steps)}")
            make_sampler("ddim", self.outer_eta, argument="nested outer")
            if self.outer_update not in OUTER_UPDATES:
                raise ValueError(f"nested outer update must be one of {OUTER_UPDATES}, got {self.outer_update!r}")
            taus = self.outer_timesteps
            if taus and (len(taus) != self.outer_steps or min(taus) < 0
                         or any(a <= b for a, b in zip(taus, taus[1:]))):
                raise ValueError(f"nested outer timesteps must be {self.outer_steps} strictly decreasing timesteps "
                                 f">= 0, got {list(taus)}")
        if self.kind == "vanilla" and self.steps < 1:
            raise ValueError(f"vanilla method needs steps >= 1, got {self.steps}")
        grids = self.grid.split("/") if isinstance(self.grid, str) else None
        if grids is None or (self.grid and not all(g.isidentifier() for g in grids)):
            raise ValueError(f"a method's grid is a spacing name like 'karras' or 'logsnr', got {self.grid!r}")
        if len(grids) > 1 and (self.kind != "nested" or len(grids) != self.outer_steps):
            raise ValueError(f"one grid per outer step is for nested methods ({self.outer_steps} outer steps), "
                             f"got {self.grid!r}")
        check_grid_end(self.grid_end)

    @property
    def inner_spacing(self) -> list[str] | None:
        """A nested method's grid spacing per outer step (``None``: the schedule's own)."""
        if self.kind != "nested" or not self.grid:
            return None
        grids = self.grid.split("/")
        return grids * self.outer_steps if len(grids) == 1 else grids

    def on(self, schedule: Any) -> Any:
        """The schedule this method runs on: the model's, or with its grid spacing (``~GRID``) and end
        (``~GRID:END``); a nested method keeps the model's and grids its inner runs (``inner_spacing``,
        ``inner_grid_end``). Checks that the grid applies."""
        if not self.grid and self.grid_end is None:
            return schedule
        try:
            ended = schedule if self.grid_end is None else schedule.replace(grid_end=self.grid_end)
            spaced = {g: ended.replace(spacing=g) if g else ended for g in self.grid.split("/")}
            if self.kind != "nested":  # a vanilla run starts at the top, where some grids have no finite level
                spaced[self.grid].timesteps(2)
        except (AttributeError, ValueError) as e:
            raise ValueError(f"{self.name}: grid {self.grid!r} does not apply to {schedule!r}: {e}") from None
        return schedule if self.kind == "nested" else spaced[self.grid]

    @property
    def name(self) -> str:
        """Row label and cache folder: ``nested-10x10-ddim-eta0.85``, ``vanilla-ddim-eta1-100``, …"""
        fixed = self.sampler in SAMPLERS and SAMPLERS[self.sampler][2]
        eta = _runs(self.eta) if isinstance(self.eta, tuple) else f"{self.eta:g}"
        sampler = self.sampler if fixed else f"{self.sampler}-eta{eta}"
        if self.kind == "nested":
            inner = (str(self.inner_steps[0]) if len(set(self.inner_steps)) == 1
                     else ".".join(map(str, self.inner_steps)))
            default_outer = DEFAULT_RESTORE_OUTER_ETA if self.sampler == DDRM else DEFAULT_OUTER_ETA
            if self.outer_update == "renoise":
                tail = "-renoise"
            else:
                tail = "" if self.outer_eta == default_outer else f"-outer{self.outer_eta:g}"
            sep = "." if all(float(t).is_integer() for t in self.outer_timesteps) else "_"
            grid = f"-at{sep.join(f'{t:g}' for t in self.outer_timesteps)}" if self.outer_timesteps else ""
            return f"nested-{self.outer_steps}x{inner}-{sampler}{tail}{grid}{self._grid_tail}"
        if self.kind == "vanilla":
            return f"vanilla-{sampler}-{self.steps}{self._grid_tail}"
        return f"envelope-{sampler}{self._grid_tail}"

    @property
    def _grid_tail(self) -> str:
        end = "" if self.grid_end is None else f"-end{self.grid_end:g}"
        return (f"-{self.grid.replace('/', '.')}" if self.grid else "") + end

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inner_steps"] = list(self.inner_steps)
        if isinstance(self.eta, tuple):
            d["eta"] = list(self.eta)
        d["outer_timesteps"] = list(self.outer_timesteps)
        if self.outer_update == "ddim" and not self.outer_timesteps:  # the keys of shards cached before these fields
            del d["outer_update"], d["outer_timesteps"]
        if not self.grid:
            del d["grid"]
        if self.grid_end is None:
            del d["grid_end"]
        return {"name": self.name, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Method":
        """The method :meth:`to_dict` wrote (as ``results.json`` records it): lists back to tuples, the name
        dropped (it follows from the fields)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "name"})

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~nested_diffusion.nested_sample` (and ``NestedPipeline.anytime``)."""
        if self.kind != "nested":
            raise ValueError(f"session_kwargs is for nested methods, not {self.kind!r}")
        kwargs = dict(outer_steps=self.outer_steps, inner_steps=list(self.inner_steps), inner_sampler=self.sampler,
                      inner_eta=list(self.eta) if isinstance(self.eta, tuple) else self.eta,
                      outer_update=self.outer_update, outer_timesteps=list(self.outer_timesteps) or None)
        if self.outer_update == "ddim":
            kwargs["outer_eta"] = self.outer_eta
        if self.inner_spacing is not None:
            kwargs["inner_spacing"] = self.inner_spacing
        if self.grid_end is not None:
            kwargs["inner_grid_end"] = self.grid_end
        return kwargs

    def frame_nfes(self, schedule: Any) -> list[int]:
        """Cumulative NFEs after each frame on ``schedule`` (nested: an inner run costs its grid's length,
        min(M, τ+1) on a discrete VP schedule)."""
        if self.kind == "nested":
            _, grids = nested_grids(self.on(schedule), self.inner_steps, self.outer_timesteps or None,
                                    inner_spacing=self.inner_spacing, inner_grid_end=self.grid_end)
            return list(itertools.accumulate(len(grid) for grid in grids))
        if self.kind == "vanilla":
            return list(range(1, self.steps + 1))
        raise ValueError("an envelope has no frames: it runs once per checkpoint")

    def cost(self, checkpoints: Sequence[int], schedule: Any) -> int:
        """NFEs per sample to evaluate this method at ``checkpoints`` on ``schedule``."""
        if self.kind == "envelope":
            return sum(checkpoints)
        nfes = self.frame_nfes(schedule)
        needed = [n for n in nfes if n <= max(checkpoints)]
        return needed[-1] if needed else 0


def _runs(values: Sequence[float]) -> str:
    """``0_0.85x5`` for (0, 0.85, 0.85, 0.85, 0.85, 0.85): runs of equal values, ``_``-separated."""
    out = []
    for value, group in itertools.groupby(values):
        n = len(list(group))
        out.append(f"{value:g}" + (f"x{n}" if n > 1 else ""))
    return "_".join(out)


def frame_at(frame_nfes: Sequence[int], checkpoint: int) -> int | None:
    """Index of the frame a user holds after ``checkpoint`` NFEs: the last with nfe <= checkpoint."""
    index = None
    for i, n in enumerate(frame_nfes):
        if n <= checkpoint:
            index = i
    return index


def _time(text: str) -> Time:
    """An outer time: an integer timestep, or a model time with a fraction (flow schedules)."""
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not value == value or value in (float("inf"), float("-inf")):
            raise ValueError(text) from None
        return value


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number in [0, 1], got {text!r}") from None


def _sampler_eta(parts: list[str], kind: str, spec: str) -> tuple[str, float]:
    sampler = parts[0] if parts and parts[0] else "ddim"
    if sampler not in SAMPLERS and sampler != DDRM:
        raise ValueError(f"{kind} spec {spec!r}: sampler must be one of {sorted(SAMPLERS) + [DDRM]}, got {sampler!r}")
    if len(parts) > 1:
        eta = _float(parts[1], f"{kind} spec {spec!r}: eta")
    elif sampler == DDRM:
        eta = _DDRM_ETA[kind]
    elif SAMPLERS[sampler][2]:
        eta = SAMPLERS[sampler][1]
    else:
        eta = _DEFAULT_ETA[kind]
    return sampler, eta


def plan_method(budget: int, schedule: Any) -> Method:
    """The project default layout for ``budget`` NFEs on a model with noise ``schedule`` (or ᾱ table)."""
    from ..planner import plan_layout

    layout = plan_layout(budget, schedule)
    eta = tuple(layout.inner_eta) if isinstance(layout.inner_eta, (list, tuple)) else layout.inner_eta
    if eta is None:  # a sampler that fixes its η (the plan's UniPC)
        eta = SAMPLERS[layout.inner_sampler][1]
    grids = layout.inner_spacing
    grid = "" if grids is None else (grids[0] if len(set(grids)) == 1 else "/".join(grids))
    return Method("nested", layout.inner_sampler, eta, len(layout.inner_steps), tuple(layout.inner_steps),
                  DEFAULT_OUTER_ETA if layout.outer_eta is None else layout.outer_eta,
                  outer_update=layout.outer_update, outer_timesteps=tuple(layout.outer_timesteps), grid=grid,
                  grid_end=layout.inner_grid_end)


def parse_method(kind: str, spec: str, *, budget: int | None = None, schedule: Any = None) -> Method:
    """Parse a command-line spec (see the module docstring); ``budget`` sets vanilla ``steps``;
    ``plan`` needs the ``budget`` and the model's noise ``schedule``."""
    if kind not in KINDS:
        raise ValueError(f"method kind must be one of {KINDS}, got {kind!r}")
    spec, _, grid = spec.strip().partition("~")
    grid, colon, end_text = grid.partition(":")
    if "~" in grid or (grid and not all(g.isidentifier() for g in grid.split("/"))) or (_ and not grid) \
            or (colon and not end_text):
        raise ValueError(f"{kind} spec {spec + _ + grid + colon + end_text!r}: expected ~GRID[:END] at the end, a "
                         "spacing like ~karras or ~logsnr (nested: or one per outer step, ~trailing/logsnr/...), "
                         "END a noise level σ/α where Karras and log-SNR grids end (~logsnr:0.03)")
    if grid:
        method = dataclasses.replace(parse_method(kind, spec, budget=budget, schedule=schedule), grid=grid)
        if colon:
            try:
                method = dataclasses.replace(method, grid_end=float(end_text))
            except ValueError:
                raise ValueError(f"{kind} spec {spec}~{grid}:{end_text}: END must be a positive noise level σ/α, "
                                 f"got {end_text!r}") from None
        return method
    if kind == "nested" and spec.strip() == "plan":
        if budget is None or schedule is None:
            raise ValueError("the nested spec 'plan' needs the budget and the model's noise schedule")
        return plan_method(budget, schedule)
    spec, _, taus_text = spec.strip().partition("@")
    parts = spec.split(":")
    if kind != "nested" and taus_text:
        raise ValueError(f"{kind} spec {spec!r}: '@' outer timesteps are for nested specs")
    if kind == "nested":
        if len(parts) > 4:
            raise ValueError(f"nested spec {spec!r}: expected OUTERxINNER[:SAMPLER[:ETA[:OUTER]]][@TAUS]")
        try:
            outer_text, inner_text = parts[0].lower().split("x")
            outer = int(outer_text)
            inner = [int(m) for m in inner_text.split("/")]
        except ValueError:
            raise ValueError(f"nested spec {spec!r}: expected OUTERxINNER like 10x10, or 4x40/30/20/10 with one "
                             "inner count per outer step") from None
        if len(inner) == 1:
            inner = inner * max(outer, 1)
        etas = parts[2].split("/") if len(parts) > 2 else []
        sampler, eta = _sampler_eta(parts[1:2] + etas[:1], "nested", spec)
        if len(etas) > 1:
            eta = tuple(_float(e, f"nested spec {spec!r}: eta") for e in etas)
        outer_update = "ddim"
        outer_eta = DEFAULT_RESTORE_OUTER_ETA if sampler == DDRM else DEFAULT_OUTER_ETA
        if len(parts) > 3 and parts[3] == "renoise":
            outer_update = "renoise"
        elif len(parts) > 3:
            outer_eta = _float(parts[3], f"nested spec {spec!r}: outer eta (or 'renoise')")
        try:
            taus = tuple(_time(t) for t in taus_text.split("/")) if taus_text else ()
        except ValueError:
            raise ValueError(f"nested spec {spec!r}: expected @TAUS as outer times like @999/400/100 (or model "
                             "times σ·T like @1000/612.5/250 on a flow schedule)") from None
        return Method("nested", sampler, eta, outer, tuple(inner), outer_eta, outer_update=outer_update,
                      outer_timesteps=taus)
    if len(parts) > 2:
        raise ValueError(f"{kind} spec {spec!r}: expected SAMPLER[:ETA]")
    sampler, eta = _sampler_eta(parts, kind, spec)
    if kind == "vanilla":
        if budget is None:
            raise ValueError("a vanilla method needs the budget (its number of steps)")
        return Method("vanilla", sampler, eta, steps=budget)
    return Method("envelope", sampler, eta)
