"""Any network as a denoiser ``D(x_t, t) = x̂0`` (k-diffusion's convention, ``external.py``).

Every sampler in this package is a small function over a denoiser; sessions wrap the denoiser of
:func:`make_denoiser` with NFE counting and deadlines, and a nested denoiser (a whole inner sampler)
is just another denoiser.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .schedules import PREDICTION_TYPES, check_alphas_cumprod, to_denoised

__all__ = ["Model", "Denoiser", "make_denoiser"]

#: A network ``model(x_t, t, **model_kwargs)`` with ``t`` an int64 tensor of shape ``(batch,)``.
Model = Callable[..., torch.Tensor]
#: ``D(x_t, t) -> x̂0`` with ``t`` a Python int timestep shared by the batch.
Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


def make_denoiser(model: Model, alphas_cumprod: torch.Tensor | Sequence[float], prediction_type: str = "epsilon",
                  model_kwargs: dict[str, Any] | None = None) -> Denoiser:
    """``D(x_t, t) = x̂0`` from the network output: one call of ``model`` (one NFE) converted by
    :func:`~nested_diffusion.schedules.to_denoised` (ε: x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t;
    v: x̂0 = √ᾱ_t x_t − √(1−ᾱ_t) v̂; sample: x̂0 = output).

    ``model_kwargs`` is read at each call, so a caller may change the condition between calls.
    Raises ``TypeError``/``ValueError`` when the network returns something other than a tensor
    shaped like ``x_t``.
    """
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t), got {type(model).__name__}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    alpha_bars = alphas_cumprod if isinstance(alphas_cumprod, list) else check_alphas_cumprod(alphas_cumprod).tolist()
    kwargs = {} if model_kwargs is None else model_kwargs

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        out = model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"model must return a tensor, got {type(out).__name__}")
        if out.shape != x.shape:
            raise ValueError(f"model returned shape {tuple(out.shape)}, expected the input's shape {tuple(x.shape)}")
        return to_denoised(out, x, alpha_bars[t], prediction_type)

    return denoise
