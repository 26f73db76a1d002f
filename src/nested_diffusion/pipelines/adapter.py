"""The adapter interface every pipeline family implements, and the rules they share.

An *adapter* turns one loaded diffusers pipeline into what the model-agnostic core needs: the
noise schedule (:mod:`nested_diffusion.schedules`, read from the pipeline's scheduler), the prediction type, initial noise, a network call ``adapter(x_t, t,
**model_kwargs)`` (one call = one NFE, classifier-free guidance included) and decoding to pixels.
Family modules (``unet2d``, ``latent``, ``stable_diffusion``, ``dit``) import only this module;
:mod:`~nested_diffusion.pipelines.pipeline` imports the families into one registry — imports run
one way, as in diffusers' ``auto_pipeline``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import torch

__all__ = ["Adapter", "Conditioning", "UnsupportedPipelineError", "check_guidance", "check_labels",
           "check_image_size", "check_condition", "check_condition_keys", "classifier_free_guidance",
           "uses_guidance"]


@dataclass(frozen=True)
class Conditioning:
    """What a family's network is conditioned on, declared by its adapter (``adapter.conditioning``)
    so that callers (the studio's controls and contract, evaluation's prompts or labels) read it
    instead of guessing from family names.

    * ``kind``: the user-level condition — ``"class"`` (``class_labels``), ``"text"`` (``prompt``)
      or ``"none"`` (unconditional);
    * ``pooled``: text models that also take a pooled text embedding (SDXL; SD3 and Flux);
    * ``guidance``: ``"cfg"`` (classifier-free guidance: a negative / null condition in one doubled
      batch), ``"embedding"`` (a guidance-distilled network takes the scale as an input: LCM, Flux
      dev) or ``"none"`` (no guidance scale: unconditional models, Flux schnell);
    * ``true_cfg``: besides that, optional true classifier-free guidance against a negative prompt
      (``true_cfg_scale``: Flux).
    """

    kind: str = "none"
    pooled: bool = False
    guidance: str = "cfg"
    true_cfg: bool = False

    KINDS = ("class", "text", "none")
    GUIDANCE = ("cfg", "embedding", "none")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"Conditioning kind must be one of {self.KINDS}, got {self.kind!r}")
        if self.guidance not in self.GUIDANCE:
            raise ValueError(f"Conditioning guidance must be one of {self.GUIDANCE}, got {self.guidance!r}")

    @property
    def fields(self) -> tuple[str, ...]:
        """The arguments of ``adapter.condition`` this model uses (a negative prompt only with
        classifier-free guidance, a guidance scale only where the model has one)."""
        negative = self.guidance == "cfg" or self.true_cfg
        out = {"class": ("class_labels",), "none": (),
               "text": ("prompt", "negative_prompt") if negative else ("prompt",)}[self.kind]
        return out + (("guidance_scale",) if self.guidance != "none" else ()) + \
            (("true_cfg_scale",) if self.true_cfg else ())

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "pooled": self.pooled, "guidance": self.guidance, "true_cfg": self.true_cfg,
                "fields": list(self.fields)}


class UnsupportedPipelineError(Exception):
    """Raised by an adapter's ``from_pipe`` when the pipeline is not of its family."""


@runtime_checkable
class Adapter(Protocol):
    """One pipeline family (see :class:`~nested_diffusion.pipelines.unet2d.UNet2DAdapter`).

    ``condition`` validates the user-level condition and returns the network's ``model_kwargs``;
    every tensor in them is batch-first with one row per image (never pre-doubled for guidance), so
    a session can select or repeat images by indexing them.
    """

    family: str
    #: the scheduler's noise schedule (a discrete VP table or flow matching); see :meth:`schedule_for`
    schedule: Any
    prediction_type: str
    default_guidance: float
    num_classes: int | None
    #: True when the network denoises pixels (restoration needs it), False for VAE latents
    pixel_space: bool
    #: what the network is conditioned on (:class:`Conditioning`)
    conditioning: Conditioning
    #: optional, default False: the network call takes ``guidance_scale`` as a ``(batch,)`` tensor
    #: too (one scale per row), so calls of sessions with different scales can share one batch
    per_row_guidance: bool

    @classmethod
    def from_pipe(cls, pipe: Any) -> "Adapter": ...

    def schedule_for(self, height: int | None = None, width: int | None = None) -> Any:
        """The schedule for images of that size (a size-dependent shift, as Flux has, changes it)."""
        ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def to(self, device: Any = None, dtype: Any = None) -> "Adapter": ...

    def condition(self, num_images: int, *, class_labels: Any = None, prompt: Any = None,
                  negative_prompt: Any = None, guidance_scale: float | None = None) -> dict[str, Any]: ...

    def latent_shape(self, num_images: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]: ...

    def size_rule(self) -> tuple[tuple[int, int], int]:
        """``((default height, default width), multiple)`` in pixels: what ``latent_shape`` accepts."""
        ...

    def initial_noise(self, num_images: int, generator: torch.Generator | None, height: int | None = None,
                      width: int | None = None) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor: ...

    def decode(self, x0: torch.Tensor) -> torch.Tensor: ...


def check_guidance(guidance_scale: Any) -> float:
    """A guidance scale as a float: finite and >= 0."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
            or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
    return float(guidance_scale)


def uses_guidance(guidance_scale: float) -> bool:
    """The project's one guidance rule: a scale w != 1 runs the doubled batch (see
    :func:`classifier_free_guidance`); w = 1 is the conditional network alone."""
    return guidance_scale != 1.0


def classifier_free_guidance(network: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor,
                             guidance_scale: float | torch.Tensor, cond: dict[str, Any], uncond: dict[str, Any] | None,
                             **shared: Any) -> torch.Tensor:
    """Network output with classifier-free guidance (Ho & Salimans 2022, eq. 6):
    out = out_u + w (out_c − out_u), both halves in one doubled batch ``[uncond, cond]`` = one NFE.

    ``cond`` and ``uncond`` hold the batch-first tensors that differ between the halves (class
    labels, text embeddings); ``shared`` is passed to both. The rule, for every family: guidance runs
    when ``uncond`` exists and w != 1 (w = 0 is the unconditional model, 0 < w < 1 interpolates);
    w = 1 calls the conditional network alone, in an undoubled batch. For w >= 1 this is diffusers'
    behaviour exactly; diffusers ignores w < 1 (no guidance), which this rule does not.

    ``guidance_scale`` may also be a ``(batch,)`` tensor, one scale per row (rows of several sessions
    packed into one call): the same rule per row, in one network call whose batch is the guided rows'
    unconditional halves followed by every row's conditional half.
    """
    if isinstance(guidance_scale, torch.Tensor):
        return _per_row_guidance(network, x, t, guidance_scale, cond, uncond, shared)
    if uncond is None or not uses_guidance(guidance_scale):
        return network(x, t, **cond, **shared)
    both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}
    out_u, out_c = network(torch.cat([x, x]), torch.cat([t, t]), **both, **shared).chunk(2)
    return out_u + guidance_scale * (out_c - out_u)


def _per_row_guidance(network: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor, w: torch.Tensor,
                      cond: dict[str, Any], uncond: dict[str, Any] | None, shared: dict[str, Any]) -> torch.Tensor:
    """:func:`classifier_free_guidance` with one scale per row (see there)."""
    n = x.shape[0]
    if w.shape != (n,):
        raise ValueError(f"a per-row guidance_scale must have shape ({n},), got {tuple(w.shape)}")
    guided = (w != 1.0) if uncond is not None else torch.zeros(n, dtype=torch.bool)
    if not bool(guided.any()):
        return network(x, t, **cond, **shared)
    rows = guided.nonzero().squeeze(1).to(x.device)

    def both(value: Any, negative: Any) -> Any:  # [guided rows' unconditional half, every row's conditional half]
        return torch.cat([negative[rows], value]) if isinstance(value, torch.Tensor) else value

    extra = {k: both(v, v) if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else v
             for k, v in shared.items()}
    out = network(both(x, x), both(t, t), **{k: both(cond[k], uncond[k]) for k in cond}, **extra)
    out_u, out_c = out[: len(rows)], out[len(rows):]
    scale = w[rows].to(device=out.device, dtype=out.dtype).view(-1, *[1] * (out.ndim - 1))
    return out_c.index_copy(0, rows, out_u + scale * (out_c[rows] - out_u))


def check_condition(adapter: Any, num_images: int, **condition: Any) -> None:
    """Validate a user-level condition exactly as ``adapter.condition`` would, without running any
    encoder: the adapter's own ``check_condition`` where it has one (text models), else
    ``adapter.condition`` itself (cheap for class-conditional and unconditional models).
    Raises ``ValueError``/``TypeError`` naming the argument."""
    own = getattr(adapter, "check_condition", None)
    if callable(own):
        own(num_images, **condition)
        return
    with torch.inference_mode():
        adapter.condition(num_images, **condition)


def check_condition_keys(adapter: Any, condition: dict[str, Any]) -> None:
    """``ValueError`` naming a condition argument the family does not take (e.g. Flux's ``true_cfg_scale`` on
    another family): only the arguments of ``adapter.condition`` are conditions of that model."""
    import inspect

    accepted = [n for n, p in inspect.signature(adapter.condition).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    for key, value in condition.items():
        if key not in accepted and value is not None:
            raise ValueError(f"{key} is not a condition of this {adapter.family} model; it takes {', '.join(accepted)}")


def check_labels(class_labels: Any, num_images: int, num_classes: int) -> torch.Tensor:
    """Class labels as a long tensor of ``num_images`` entries in ``[0, num_classes)``."""
    try:
        labels = torch.as_tensor(class_labels).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"class_labels must be integers, got {class_labels!r}") from e
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"class_labels must be integers, got {class_labels!r}")
    labels = labels.long()
    if labels.numel() == 1:
        labels = labels.expand(num_images)
    if labels.numel() != num_images:
        raise ValueError(f"class_labels must be one label or {num_images} labels, got {labels.numel()}")
    if ((labels < 0) | (labels >= num_classes)).any():
        raise ValueError(f"class_labels must lie in [0, {num_classes - 1}], got {labels.tolist()}")
    return labels


def check_image_size(height: Any, width: Any, default: tuple[int, int], multiple: int,
                     maximum: int = 8192) -> tuple[int, int]:
    """``(height, width)`` in pixels, ``None`` taking ``default``; each a positive multiple of
    ``multiple`` (the network's total downsampling) and at most ``maximum``."""
    out = []
    for name, value, fallback in (("height", height, default[0]), ("width", width, default[1])):
        value = fallback if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % multiple or value > maximum:
            raise ValueError(f"{name} must be a positive multiple of {multiple} pixels for this model "
                             f"(at most {maximum}), got {value!r}")
        out.append(value)
    return out[0], out[1]
