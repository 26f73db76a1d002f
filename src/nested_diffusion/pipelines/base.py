"""``NestedPipeline``: nested (and vanilla-with-previews) sampling for loaded diffusers pipelines.

Each supported family is a thin *adapter* exposing the pipeline's own schedule (ᾱ from its
scheduler), prediction type, initial noise, a guided network call (classifier-free guidance in
one doubled batch = one NFE) and decoding. The sampling itself is the model-agnostic core
(:mod:`nested_diffusion.nested`, :mod:`nested_diffusion.vanilla`); no pipeline ``__call__`` is
copied.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from ..defaults import DEFAULT_BUDGET, DEFAULT_INNER_SAMPLER
from ..nested import NestedSession
from ..planner import plan_layout, plan_schedule
from ..session import Session
from ..vanilla import VanillaSession

__all__ = ["Adapter", "NestedPipeline", "PipelineSession", "PipelineFrame", "UnsupportedPipelineError",
           "OUTPUT_TYPES"]

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class UnsupportedPipelineError(Exception):
    """Raised by an adapter's ``from_pipe`` when the pipeline is not of its family."""


class Adapter:
    """Interface of a pipeline family (see :class:`~nested_diffusion.pipelines.unet2d.UNet2DAdapter`)."""

    family: str
    alphas_cumprod: torch.Tensor
    prediction_type: str
    default_guidance: float

    @staticmethod
    def check_guidance(guidance_scale: Any) -> float:
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
                or not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        return float(guidance_scale)


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


@dataclass(frozen=True)
class PipelineFrame:
    """A decoded anytime frame: ``images`` by ``output_type`` (``None`` for frames skipped by
    ``decode_every``), ``latents`` the raw x̂0 in model space, and the core frame's counters."""

    images: Any
    latents: torch.Tensor
    nfe: int
    step: int
    timestep: int
    num_steps: int
    elapsed: float

    @property
    def is_final(self) -> bool:
        return self.step == self.num_steps


def to_output(pixels: torch.Tensor, output_type: str) -> Any:
    """Convert ``[N, C, H, W]`` pixels in [0, 1] to ``"pt"``, ``"np"`` (NHWC) or ``"pil"``."""
    if output_type == "pt":
        return pixels.cpu()
    array = pixels.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return array
    from PIL import Image

    array = (array * 255).round().astype("uint8")
    return [Image.fromarray(a[..., 0], mode="L") if a.shape[-1] == 1 else Image.fromarray(a) for a in array]


class PipelineSession:
    """A core :class:`~nested_diffusion.session.Session` whose frames are decoded, plus the
    interventions of the paper: change prompt / class / guidance between steps, fork, budgets."""

    def __init__(self, pipeline: "NestedPipeline", core: Session, condition: dict[str, Any],
                 output_type: str = "pil", decode_every: int = 1) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if isinstance(decode_every, bool) or not isinstance(decode_every, int) or decode_every < 1:
            raise ValueError(f"decode_every must be a positive integer, got {decode_every!r}")
        self.pipeline, self.core, self.output_type, self.decode_every = pipeline, core, output_type, decode_every
        self.condition = condition  # the user-level arguments, kept for set_condition
        self.last_frame: PipelineFrame | None = None
        self._source = None  # the core frame behind last_frame

    @property
    def done(self) -> bool:
        return self.core.done

    @property
    def nfe(self) -> int:
        return self.core.nfe

    @property
    def num_steps(self) -> int:
        return self.core.num_steps

    def checkpoints(self) -> list[int]:
        return self.core.checkpoints()

    def set_condition(self, **changes: Any) -> None:
        """Change ``prompt``, ``negative_prompt``, ``class_labels`` or ``guidance_scale`` for the
        steps that follow; frames already produced are unaffected."""
        allowed = {"prompt", "negative_prompt", "class_labels", "guidance_scale"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"set_condition accepts {sorted(allowed)}, got {sorted(unknown)}")
        condition = {**self.condition, **changes}
        with torch.inference_mode():
            self.core.model_kwargs = self.pipeline.adapter.condition(len(self.core.x), **condition)
        self.condition = condition

    def decode(self, latents: torch.Tensor, output_type: str | None = None) -> Any:
        """Decode x̂0 latents to ``output_type`` (default: the session's)."""
        output_type = output_type or self.output_type
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if output_type == "latent":
            return latents
        with torch.inference_mode():
            return to_output(self.pipeline.adapter.decode(latents), output_type)

    def _wrap(self, frame, decode: bool) -> PipelineFrame:
        self._source = frame
        self.last_frame = PipelineFrame(
            images=self.decode(frame.image) if decode else None, latents=frame.image, nfe=frame.nfe,
            step=frame.step, timestep=frame.timestep, num_steps=frame.num_steps, elapsed=frame.elapsed)
        return self.last_frame

    def step(self) -> PipelineFrame:
        with torch.inference_mode():
            frame = self.core.step()
        return self._wrap(frame, frame.step % self.decode_every == 0 or frame.is_final)

    def __iter__(self) -> Iterator[PipelineFrame]:
        return self

    def __next__(self) -> PipelineFrame:
        if self.core.done:
            raise StopIteration
        return self.step()

    def frames(self, max_nfe: int | None = None, deadline: float | None = None) -> Iterator[PipelineFrame]:
        """Stream decoded frames until done, an NFE budget or a deadline (seconds from this call)."""
        core_frames = self.core.frames(max_nfe, deadline)  # validates eagerly
        while True:
            with torch.inference_mode():
                frame = next(core_frames, None)
            if frame is None:
                return
            yield self._wrap(frame, frame.step % self.decode_every == 0 or frame.is_final)

    def run(self, max_nfe: int | None = None, deadline: float | None = None) -> PipelineFrame | None:
        """Run to the end, an NFE budget or a deadline (seconds); the last complete frame, decoded."""
        with torch.inference_mode():
            frame = self.core.run(max_nfe=max_nfe, deadline=deadline)
        if frame is None:
            return None
        if self.last_frame is None or self._source is not frame or self.last_frame.images is None:
            self._wrap(frame, decode=True)
        return self.last_frame

    def fork(self, generator: torch.Generator | None = None) -> "PipelineSession":
        """Independent continuation (see :meth:`Session.fork`)."""
        child = PipelineSession(self.pipeline, self.core.fork(generator), dict(self.condition),
                                self.output_type, self.decode_every)
        child.last_frame, child._source = self.last_frame, self._source
        return child


class NestedPipeline:
    """Anytime sampling for a loaded diffusers pipeline.

    >>> nested = NestedPipeline.from_pretrained(folder)            # doctest: +SKIP
    >>> for frame in nested.anytime(class_labels=[3], generator=g):  # doctest: +SKIP
    ...     frame.images[0].save(f"{frame.nfe:03d}.png")
    """

    def __init__(self, adapter: Adapter, pipe: Any = None) -> None:
        self.adapter, self.pipe = adapter, pipe

    @staticmethod
    def adapters() -> list[type]:
        from .dit import DiTAdapter
        from .stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter
        from .unet2d import UNet2DAdapter

        return [UNet2DAdapter, StableDiffusionAdapter, StableDiffusionXLAdapter, DiTAdapter]

    @classmethod
    def from_pipe(cls, pipe: Any) -> "NestedPipeline":
        """Wrap an already-loaded diffusers pipeline of a supported family."""
        for adapter in cls.adapters():
            try:
                return cls(adapter.from_pipe(pipe), pipe)
            except UnsupportedPipelineError:
                continue
        names = ", ".join(a.family for a in cls.adapters())
        raise ValueError(f"unsupported pipeline {type(pipe).__name__}: supported families are {names}")

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, *, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, **kwargs: Any) -> "NestedPipeline":
        """Load with diffusers' ``DiffusionPipeline.from_pretrained`` (hub id or local folder);
        ``None`` loads the embedded MNIST digit model, offline."""
        from ..models import embedded_model_path

        path = embedded_model_path() if model is None else model
        text = os.fspath(path)
        local = Path(text).expanduser()
        if local.exists():
            if not local.is_dir():
                raise ValueError(f"model {text!r} is a file; expected a diffusers pipeline folder or a hub id")
            if not (local / "model_index.json").is_file():
                raise ValueError(f"model folder {text!r} has no model_index.json: not a diffusers pipeline folder")
        elif text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
            raise ValueError(f"model folder {text!r} does not exist")
        from diffusers import DiffusionPipeline

        try:
            pipe = DiffusionPipeline.from_pretrained(str(local) if local.exists() else text,
                                                     torch_dtype=torch_dtype, **kwargs)
        except Exception as e:  # diffusers raises many types (OSError, ValueError, EnvironmentError…)
            where = "folder" if local.exists() else "hub id"
            raise ValueError(f"cannot load the pipeline from {where} {text!r}: {e}") from e
        nested = cls.from_pipe(pipe)
        if device is not None:
            nested.to(device)
        return nested

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "NestedPipeline":
        self.adapter.to(device, dtype)
        return self

    # -- sessions ---------------------------------------------------------------------------------
    def session(self, method: str = "nested", *, prompt: Any = None, negative_prompt: Any = None,
                class_labels: Any = None, num_images: int | None = None, guidance_scale: float | None = None,
                outer_steps: int | None = None, inner_steps: int | Sequence[int] | None = None,
                inner_sampler: str | None = None,
                inner_eta: float | Sequence[float] | None = None, outer_eta: float | None = None,
                outer_timesteps: Sequence[int] | None = None, outer_update: str | None = None,
                num_inference_steps: int = 100, sampler: str = "ddim", eta: float | None = 1.0,
                generator: torch.Generator | None = None, height: int | None = None, width: int | None = None,
                output_type: str = "pil", decode_every: int = 1,
                latents: torch.Tensor | None = None) -> PipelineSession:
        """A resumable session: ``method="nested"`` (frames = inner-run samples) or ``"vanilla"``
        (frames = one-step x̂0 previews of a ``num_inference_steps`` sampler).

        Nested defaults are the project's measured layout: with no layout argument at all,
        :func:`~nested_diffusion.planner.plan_layout` for 100 NFEs and this model's noise schedule;
        with some, the rest default as before (both counts 10, DPM-Solver++(2M) inner runs, a DDIM
        outer step): give ``outer_steps=10, inner_steps=10, inner_sampler="ddim"`` for the paper's
        layout (``inner_steps`` may be one count per outer step).

        ``latents`` (optional) is the initial noise x_T, like diffusers' ``latents=``; by default it
        is drawn from ``generator`` exactly as the diffusers pipeline draws it."""
        if method not in ("nested", "vanilla"):
            raise ValueError(f"method must be 'nested' or 'vanilla', got {method!r}")
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or not latents.is_floating_point() or latents.ndim < 2:
                raise ValueError("latents must be a floating-point tensor [num_images, channels, ...]")
            if num_images is None:
                num_images = latents.shape[0]
        if num_images is None:
            num_images = _batch_size(prompt, class_labels)
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
        a = self.adapter
        condition = dict(prompt=prompt, negative_prompt=negative_prompt, class_labels=class_labels,
                         guidance_scale=guidance_scale)
        with torch.inference_mode():
            model_kwargs = a.condition(num_images, **condition)
            if latents is None:
                noise = a.initial_noise(num_images, generator, height=height, width=width)
            else:
                shape = getattr(a, "latent_shape", None)
                expected = tuple(shape(num_images, height, width)) if shape is not None else None
                if expected is not None and tuple(latents.shape) != expected:
                    raise ValueError(f"latents must have shape {expected}, got {tuple(latents.shape)}")
                if latents.shape[0] != num_images:
                    raise ValueError(f"latents must hold {num_images} images (first dimension), "
                                     f"got shape {tuple(latents.shape)}")
                noise = latents.to(device=a.device, dtype=a.dtype)
        common = dict(prediction_type=a.prediction_type, generator=generator, model_kwargs=model_kwargs)
        if method == "nested":
            layout = dict(outer_steps=outer_steps, inner_steps=inner_steps, inner_sampler=inner_sampler,
                          inner_eta=inner_eta, outer_eta=outer_eta, outer_timesteps=outer_timesteps,
                          outer_update=outer_update)
            if all(v is None for v in layout.values()):  # the project default, planned for this model's schedule
                layout = plan_layout(DEFAULT_BUDGET, a.alphas_cumprod).session_kwargs()
            else:
                layout["outer_steps"], layout["inner_steps"] = _layout(outer_steps, inner_steps, outer_timesteps)
                layout["inner_sampler"] = DEFAULT_INNER_SAMPLER if inner_sampler is None else inner_sampler
                layout["outer_update"] = "ddim" if outer_update is None else outer_update
            core = NestedSession(a, a.alphas_cumprod, noise, **layout, **common)
        else:
            core = VanillaSession(a, a.alphas_cumprod, noise, steps=num_inference_steps, sampler=sampler, eta=eta,
                                  **common)
        return PipelineSession(self, core, condition, output_type=output_type, decode_every=decode_every)

    def anytime(self, **kwargs: Any) -> PipelineSession:
        """Nested diffusion: iterate for one decoded frame per outer step."""
        return self.session("nested", **kwargs)

    def vanilla(self, **kwargs: Any) -> PipelineSession:
        """The baseline: one x̂0-preview frame per network call (``num_inference_steps``)."""
        return self.session("vanilla", **kwargs)

    def __call__(self, **kwargs: Any) -> PipelineFrame:
        """Run nested sampling to the end and return the final frame (``.images``)."""
        return self.anytime(**kwargs).run()


def _layout(outer_steps: int | None, inner_steps: Any, outer_timesteps: Any = None) -> tuple[int | None, Any]:
    """Resolve the nested layout defaults (see :meth:`NestedPipeline.session`)."""
    if outer_timesteps is not None:  # the grid fixes the outer step count
        return outer_steps, 10 if inner_steps is None else inner_steps
    if outer_steps is None and inner_steps is None:
        inner_steps = plan_schedule(DEFAULT_BUDGET)
    if isinstance(inner_steps, (list, tuple)):
        return (len(inner_steps) if outer_steps is None else outer_steps), list(inner_steps)
    return (10 if outer_steps is None else outer_steps), (10 if inner_steps is None else inner_steps)


def _batch_size(prompt: Any, class_labels: Any) -> int:
    if isinstance(prompt, (list, tuple)):
        return len(prompt)
    if class_labels is not None:
        n = torch.as_tensor(class_labels).numel()
        return max(n, 1)
    return 1
