"""Any network as a denoiser ``D(x_t, t) = x̂0`` (k-diffusion's convention, ``external.py``).

Every sampler in this package is a small function over a denoiser; sessions wrap the denoiser of
:func:`make_denoiser` with NFE counting and deadlines, and a nested denoiser (a whole inner sampler)
is just another denoiser.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .schedules import Schedule, Time, as_schedule, to_denoised

__all__ = ["Model", "Denoiser", "make_denoiser"]

#: A network ``model(x_t, t, **model_kwargs)``; ``t`` is the schedule's model time of shape ``(batch,)``:
#: int64 timesteps on a discrete VP schedule, float32 σ·T on a flow schedule.
Model = Callable[..., torch.Tensor]
#: ``D(x_t, t) -> x̂0`` with ``t`` a grid time shared by the batch.
Denoiser = Callable[[torch.Tensor, Time], torch.Tensor]


def make_denoiser(model: Model, schedule: Schedule | Any, prediction_type: str | None = None,
                  model_kwargs: dict[str, Any] | None = None) -> Denoiser:
    """``D(x_t, t) = x̂0`` from the network output: one call of ``model`` (one NFE) at the schedule's
    model time, converted by :func:`~nested_diffusion.schedules.to_denoised` at the level (α_t, σ_t)
    (ε: x̂0 = (x_t − σ_t ε̂)/α_t; v: x̂0 = α_t x_t − σ_t v̂ on a VP schedule; sample: x̂0 = output;
    flow: x̂0 = x_t − σ_t v̂ on a flow schedule).

    ``schedule`` is a :class:`~nested_diffusion.schedules.Schedule` or a 1-D ᾱ tensor;
    ``prediction_type`` defaults to the schedule's (ε for VP, flow for flow matching).
    ``model_kwargs`` is read at each call, so a caller may change the condition between calls.
    Raises ``TypeError``/``ValueError`` when the network returns something other than a tensor
    shaped like ``x_t``.
    """
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t), got {type(model).__name__}")
    schedule = as_schedule(schedule)
    prediction_type = schedule.check_prediction_type(
        schedule.default_prediction_type if prediction_type is None else prediction_type)
    kwargs = {} if model_kwargs is None else model_kwargs

    def denoise(x: torch.Tensor, t: Time) -> torch.Tensor:
        out = model(x, schedule.model_time(t, x.shape[0], x.device), **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"model must return a tensor, got {type(out).__name__}")
        if out.shape != x.shape:
            raise ValueError(f"model returned shape {tuple(out.shape)}, expected the input's shape {tuple(x.shape)}")
        return to_denoised(out, x, schedule.level(t), prediction_type)

    return denoise
