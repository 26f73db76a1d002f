"""What an evaluation compares: nested configurations, vanilla x̂0 previews and the envelope.

A :class:`Method` is a frozen description; its :attr:`~Method.name` is the row label in
``results.csv`` (``nested-…``, ``vanilla-…``, ``envelope-…``) and the folder of its cached shards.
Spec strings, as the command line takes them::

    nested    OUTERxINNER[:SAMPLER[:ETA[:OUTER_ETA]]]   10x10, 20x5:dpmpp-2m, 5x20:ddim:0.5,
                                                         4x40/30/20/10 (one inner count per outer step)
    vanilla   SAMPLER[:ETA]                              ddim:1, dpmpp-2m   (budget steps, x̂0 previews)
    envelope  SAMPLER[:ETA]                              dpmpp-2m:0          (one run of exactly N steps
                                                                              per checkpoint N)

On a restoration target (``evaluate --task``) the sampler ``ddrm`` names DDRM (Kawar et al. 2022):
``nested 6x10/10/10/20/25/25:ddrm:0.95:0.5`` is nested DDRM (inner η, outer η), ``vanilla ddrm:0.85``
DDRM's x̂0 previews, ``envelope ddrm:0.85`` exact-N DDRM runs; a nested spec with the
``dpmpp-2m`` sampler there is the unconditional-inner (PSC) variant.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from ..defaults import (DEFAULT_DDRM_ETA, DEFAULT_INNER_ETA, DEFAULT_OUTER_ETA, DEFAULT_RESTORE_INNER_ETA,
                        DEFAULT_RESTORE_OUTER_ETA)
from ..samplers import SAMPLERS, make_sampler
from ..nested import nested_grids

__all__ = ["Method", "parse_method", "KINDS", "frame_at", "DDRM"]

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
    ``sampler``/``eta`` and outer DDIM ``outer_eta``. ``kind="vanilla"``: ``sampler``/``eta`` with
    ``steps`` network calls, frames are x̂0 previews. ``kind="envelope"``: for each checkpoint N a
    separate, non-anytime ``sampler`` run of exactly N steps (what knowing the budget buys).
    """

    kind: str
    sampler: str = "ddim"
    eta: float = 0.0
    outer_steps: int = 0
    inner_steps: tuple[int, ...] = ()
    outer_eta: float = DEFAULT_OUTER_ETA
    steps: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method kind must be one of {KINDS}, got {self.kind!r}")
        if self.sampler == DDRM:
            make_sampler("ddim", self.eta, argument=f"{self.kind} ddrm")  # η in [0, 1]
        else:
            make_sampler(self.sampler, self.eta, argument=f"{self.kind} sampler")  # validates name and η
        if self.kind == "nested":
            if self.outer_steps < 1 or len(self.inner_steps) != self.outer_steps or min(self.inner_steps) < 1:
                raise ValueError(f"nested method needs outer_steps >= 1 and one inner count >= 1 per outer step, "
                                 f"got {self.outer_steps} × {list(self.inner_steps)}")
            make_sampler("ddim", self.outer_eta, argument="nested outer")
        if self.kind == "vanilla" and self.steps < 1:
            raise ValueError(f"vanilla method needs steps >= 1, got {self.steps}")

    @property
    def name(self) -> str:
        """Row label and cache folder: ``nested-10x10-ddim-eta0.85``, ``vanilla-ddim-eta1-100``, …"""
        fixed = self.sampler in SAMPLERS and SAMPLERS[self.sampler][2]
        sampler = self.sampler if fixed else f"{self.sampler}-eta{self.eta:g}"
        if self.kind == "nested":
            inner = (str(self.inner_steps[0]) if len(set(self.inner_steps)) == 1
                     else ".".join(map(str, self.inner_steps)))
            default_outer = DEFAULT_RESTORE_OUTER_ETA if self.sampler == DDRM else DEFAULT_OUTER_ETA
            tail = "" if self.outer_eta == default_outer else f"-outer{self.outer_eta:g}"
            return f"nested-{self.outer_steps}x{inner}-{sampler}{tail}"
        if self.kind == "vanilla":
            return f"vanilla-{sampler}-{self.steps}"
        return f"envelope-{sampler}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inner_steps"] = list(self.inner_steps)
        return {"name": self.name, **d}

    def frame_nfes(self, num_train_timesteps: int) -> list[int]:
        """Cumulative NFEs after each frame (nested: an inner run from τ costs min(M, τ+1))."""
        if self.kind == "nested":
            _, grids = nested_grids(num_train_timesteps, self.outer_steps, self.inner_steps)
            return list(itertools.accumulate(len(grid) for grid in grids))
        if self.kind == "vanilla":
            return list(range(1, self.steps + 1))
        raise ValueError("an envelope has no frames: it runs once per checkpoint")

    def cost(self, checkpoints: Sequence[int], num_train_timesteps: int) -> int:
        """NFEs per sample to evaluate this method at ``checkpoints``."""
        if self.kind == "envelope":
            return sum(checkpoints)
        nfes = self.frame_nfes(num_train_timesteps)
        needed = [n for n in nfes if n <= max(checkpoints)]
        return needed[-1] if needed else 0


def frame_at(frame_nfes: Sequence[int], checkpoint: int) -> int | None:
    """Index of the frame a user holds after ``checkpoint`` NFEs: the last with nfe <= checkpoint."""
    index = None
    for i, n in enumerate(frame_nfes):
        if n <= checkpoint:
            index = i
    return index


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


def parse_method(kind: str, spec: str, *, budget: int | None = None) -> Method:
    """Parse a command-line spec (see the module docstring); ``budget`` sets vanilla ``steps``."""
    if kind not in KINDS:
        raise ValueError(f"method kind must be one of {KINDS}, got {kind!r}")
    parts = spec.strip().split(":")
    if kind == "nested":
        if len(parts) > 4:
            raise ValueError(f"nested spec {spec!r}: expected OUTERxINNER[:SAMPLER[:ETA[:OUTER_ETA]]]")
        try:
            outer_text, inner_text = parts[0].lower().split("x")
            outer = int(outer_text)
            inner = [int(m) for m in inner_text.split("/")]
        except ValueError:
            raise ValueError(f"nested spec {spec!r}: expected OUTERxINNER like 10x10, or 4x40/30/20/10 with one "
                             "inner count per outer step") from None
        if len(inner) == 1:
            inner = inner * max(outer, 1)
        sampler, eta = _sampler_eta(parts[1:3], "nested", spec)
        default_outer = DEFAULT_RESTORE_OUTER_ETA if sampler == DDRM else DEFAULT_OUTER_ETA
        outer_eta = _float(parts[3], f"nested spec {spec!r}: outer eta") if len(parts) > 3 else default_outer
        return Method("nested", sampler, eta, outer, tuple(inner), outer_eta)
    if len(parts) > 2:
        raise ValueError(f"{kind} spec {spec!r}: expected SAMPLER[:ETA]")
    sampler, eta = _sampler_eta(parts, kind, spec)
    if kind == "vanilla":
        if budget is None:
            raise ValueError("a vanilla method needs the budget (its number of steps)")
        return Method("vanilla", sampler, eta, steps=budget)
    return Method("envelope", sampler, eta)
