"""Explicit, device-independent Gaussian noise: one generator for the batch, or one per image."""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch

__all__ = ["Generator", "randn_like", "check_generator", "get_rng_state", "set_rng_state", "copy_generator",
           "select_generators"]

#: ``None`` (torch's global RNG), one ``torch.Generator`` for the batch, or a list of them, one per image
#: (diffusers' convention): then every row's noise depends on its own generator only, not on the batch.
Generator = Union[None, torch.Generator, Sequence[torch.Generator]]


def check_generator(generator: Any, batch: int | None = None, name: str = "generator") -> Generator:
    """``generator`` validated: None, a ``torch.Generator`` or a list of ``batch`` of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)) and generator and all(isinstance(g, torch.Generator) for g in generator):
        if batch is not None and len(generator) != batch:
            raise ValueError(f"{name} as a list needs one torch.Generator per image ({batch}), got {len(generator)}")
        return list(generator)
    raise TypeError(f"{name} must be a torch.Generator, a list of them (one per image) or None, "
                    f"got {type(generator).__name__}")


def _draw(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
          dtype: torch.dtype) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    if generator.device.type == device.type:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def randn_like(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device, then moved.

    Like diffusers' ``randn_tensor``: a CPU generator gives the same images on CPU and GPU, and a list of
    generators draws row i from generator i."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise ValueError(f"generator lists one torch.Generator per image: {len(generator)} for a batch of "
                             f"{x.shape[0]}")
        devices = {g.device for g in generator}
        if len(devices) == 1:  # the common case: fill each row in place (the same numbers as one randn per row)
            device = devices.pop()
            out = torch.empty(x.shape, dtype=x.dtype, device=device if device.type != x.device.type else x.device)
            for row, g in zip(out.unbind(0), generator):
                row.normal_(generator=g)
            return out.to(x.device)
        return torch.cat([_draw((1, *x.shape[1:]), g, x.device, x.dtype) for g in generator])
    return _draw(tuple(x.shape), generator, x.device, x.dtype)


def get_rng_state(generator: Generator) -> Any:
    """The state of ``generator`` (each one of a list), for :func:`set_rng_state`."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        return generator.get_state()
    return [g.get_state() for g in generator]


def set_rng_state(generator: Generator, state: Any) -> None:
    if generator is None or state is None:
        return
    if isinstance(generator, torch.Generator):
        generator.set_state(state)
        return
    for g, s in zip(generator, state):
        g.set_state(s)


def copy_generator(generator: Generator) -> Generator:
    """Independent generator(s) in the same state."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        copy = torch.Generator(device=generator.device)
        copy.set_state(generator.get_state())
        return copy
    return [copy_generator(g) for g in generator]


def select_generators(generator: Generator, rows: Sequence[int]) -> Generator:
    """A list of per-image generators restricted to ``rows`` (the same objects: copy them to continue
    independently); a single generator or ``None`` is returned as it is."""
    if isinstance(generator, (list, tuple)):
        return [generator[i] for i in rows]
    return generator
