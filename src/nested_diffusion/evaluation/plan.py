"""What an evaluation measures when the user does not say: checkpoints, methods and metrics."""

from __future__ import annotations

from typing import Any, Sequence

from ..defaults import DEFAULT_FRAME_FRACTIONS
from ..planner import plan_schedule
from .methods import Method, parse_method

__all__ = ["default_checkpoints", "default_methods", "default_metrics", "DEFAULT_VANILLA", "DEFAULT_ENVELOPES"]

#: the x̂0-preview baseline every UI shows: DDIM η = 1 with the budget's steps
DEFAULT_VANILLA = ("ddim:1",)
#: what knowing the budget buys: separate exact-N runs, stochastic DDIM and the DPM-Solver++(2M) ODE
DEFAULT_ENVELOPES = ("ddim:1", "dpmpp-2m:0")
#: restoration (``--task``): DDRM's previews at its reference η, exact-N DDRM runs at η 0.85 and 1
RESTORE_VANILLA = ("ddrm",)
RESTORE_ENVELOPES = ("ddrm:0.85", "ddrm:1")


def default_checkpoints(budget: int) -> tuple[int, ...]:
    """10, 20, 30, 50, 75 and 100 % of ``budget`` (rounded, deduplicated): where the project default
    layout puts its frames."""
    return tuple(sorted({max(1, round(budget * f)) for f in DEFAULT_FRAME_FRACTIONS}))


def default_methods(budget: int, *, nested: Sequence[str] | None = None, vanilla: Sequence[str] | None = None,
                    envelope: Sequence[str] | None = None, restoration: bool = False,
                    schedule: Any = None) -> list[Method]:
    """Methods from spec strings (see :mod:`.methods`); a group given as ``None`` takes its default —
    the project's nested layout for ``budget`` (``plan``: :func:`~nested_diffusion.planner.plan_layout`
    for the model's noise ``schedule``), :data:`DEFAULT_VANILLA`, :data:`DEFAULT_ENVELOPES`, or for a
    ``restoration`` task nested DDRM with the growing layout, :data:`RESTORE_VANILLA` and
    :data:`RESTORE_ENVELOPES` — and an empty group is left out. Without a ``schedule`` the
    ``plan`` specs are left out (their syntax is all there is to check before a model is loaded)."""
    if nested is None and restoration:
        inner = plan_schedule(budget)
        nested = [f"{len(inner)}x{'/'.join(map(str, inner))}:ddrm"]
    elif nested is None:
        nested = ["plan"]
    is_plan = lambda spec: spec.partition("~")[0].strip() == "plan"  # noqa: E731  (plan, plan~GRID)
    planned = any(is_plan(s) for s in nested)
    if schedule is None:
        nested = [s for s in nested if not is_plan(s)]
    if vanilla is None:
        vanilla = RESTORE_VANILLA if restoration else DEFAULT_VANILLA
    if envelope is None:
        envelope = RESTORE_ENVELOPES if restoration else DEFAULT_ENVELOPES
    methods = [parse_method("nested", s, budget=budget, schedule=schedule) for s in nested]
    methods += [parse_method("vanilla", s, budget=budget) for s in vanilla]
    methods += [parse_method("envelope", s) for s in envelope]
    if not methods and not planned:
        raise ValueError("nothing to evaluate: no nested, vanilla or envelope method")
    return methods


def default_metrics(target: Any) -> list[str]:
    """``gmm-fd`` for the oracle; digit-FD (and accuracy with 10 classes) for 28×28 grayscale digit
    models; FID otherwise. Restoration adds the residual ratio, and PSNR on images (of the mean of a
    measurement's samples too, when there are several)."""
    restoration = hasattr(target, "measurement")
    if getattr(target, "gmm", None) is not None:
        return ["gmm-fd"] + (["residual"] if restoration else [])
    if target.image_shape == (1, 28, 28):
        names = ["digit-fd", "accuracy"] if target.num_classes == 10 else ["digit-fd"]
    else:
        names = ["fid"]
    if restoration:
        names += ["residual", "psnr"] + (["psnr-mean"] if target.per_measurement > 1 else [])
    return names
