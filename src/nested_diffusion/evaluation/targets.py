"""What is evaluated: a model behind one interface, whatever its kind.

A target runs a method's sessions on a batch and turns raw samples (model space: pixels in
[-1, 1], VAE latents, or mixture vectors) into pixels in [0, 1]. Two kinds:

* :class:`PipelineTarget` — any :class:`~nested_diffusion.pipelines.NestedPipeline` (the embedded
  digit model, DDPM, SD/SDXL, DiT);
* :class:`GMMTarget` — the exact Gaussian-mixture oracle (``--model gmm[:SCHEDULE[:PREDICTION]]``,
  ``gmm:flow[:SHIFT][:PREDICTION]``), whose samples are 8×8 "digits".
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch

from ..samplers.noise import Generator, randn_like
from .methods import Method

__all__ = ["PipelineTarget", "GMMTarget", "load_target", "GMM_SCHEDULES", "check_sampler", "gmm_schedule"]

#: the oracle's schedules: three discrete VP tables and rectified flow (``flow[:SHIFT]``)
GMM_SCHEDULES = ("linear", "scaled_linear", "cosine", "flow")


class PipelineTarget:
    def __init__(self, pipe: Any, name: str, guidance_scale: float | None = None,
                 prompts: Sequence[str] | None = None, height: int | None = None, width: int | None = None,
                 fingerprint: str | None = None) -> None:
        self.pipe, self.name, self.fingerprint = pipe, name, fingerprint
        adapter = pipe.adapter
        self.schedule = adapter.schedule_for(height, width)
        self.prediction_type = adapter.prediction_type
        self.num_classes = getattr(adapter, "num_classes", None)
        self.guidance_scale = adapter.default_guidance if guidance_scale is None else guidance_scale
        self.prompts = list(prompts) if prompts else None
        self.height, self.width = height, width
        text_model = adapter.conditioning.kind == "text"  # what the adapter declares
        if text_model and not self.prompts:
            raise ValueError("this is a text-to-image model: give prompts (one per sample, cycled)")
        if self.prompts and not text_model:
            raise ValueError("prompts need a text-to-image model; this model is not text-conditional")
        names = getattr(adapter, "class_names", None)
        self.class_names = list(names) if names else (
            [str(c) for c in range(self.num_classes)] if self.num_classes else None)
        self.image_shape = self._image_shape()

    def _image_shape(self) -> tuple[int, ...] | None:
        adapter = self.pipe.adapter
        if getattr(adapter, "family", None) == "unet2d":
            h = self.height or adapter.sample_size[0]
            w = self.width or adapter.sample_size[1]
            return (adapter.channels, h, w)
        return (3, self.height or 0, self.width or 0)  # latent models decode to RGB

    def condition(self, indices: range) -> tuple[torch.Tensor | None, list[str] | None]:
        """Labels cycle through the classes (balanced); prompts cycle through the prompt list."""
        labels = torch.tensor([i % self.num_classes for i in indices]) if self.num_classes else None
        if self.prompts:
            return labels, [self.prompts[i % len(self.prompts)] for i in indices]
        if labels is not None and self.class_names:
            return labels, [f"a handwritten digit {self.class_names[c]}" if self.image_shape == (1, 28, 28)
                            else f"a photo of a {self.class_names[c]}" for c in labels.tolist()]
        return labels, None

    def frames(self, method: Method, rows: range, labels, prompts, generator: Generator,
               steps: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(nfe, raw x̂0)`` per frame of the samples ``rows``; ``steps`` overrides a vanilla/envelope
        step count; ``generator`` is one per sample (evaluate's) or one for the batch."""
        check_sampler(method, restoration=False)
        common = dict(class_labels=labels, prompt=prompts if self.prompts else None, num_images=len(rows),
                      guidance_scale=self.guidance_scale, generator=generator, output_type="latent",
                      height=self.height, width=self.width)
        if method.kind == "nested":
            session = self.pipe.anytime(**method.session_kwargs(), **common)
        else:
            session = self.pipe.vanilla(num_inference_steps=steps or method.steps, sampler=method.sampler,
                                        eta=method.eta, **common)
        if method.grid:
            session = _on_grid(session, method)
        for frame in session:
            yield frame.nfe, frame.latents

    @torch.inference_mode()
    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return self.pipe.adapter.decode(raw).float().cpu()

    def describe(self) -> dict[str, Any]:
        """Everything that changes the samples (part of every shard's cache key)."""
        return {"model": self.name, "fingerprint": self.fingerprint, "dtype": str(self.pipe.adapter.dtype),
                "guidance_scale": self.guidance_scale, "prompts": self.prompts, "height": self.height,
                "width": self.width}


class GMMTarget:
    """The exact oracle: a Gaussian mixture fitted to scikit-learn's 8×8 digits, behind a "network"
    with the given noise schedule and prediction type (default: the schedule's)."""

    def __init__(self, schedule: str = "linear", prediction_type: str | None = None,
                 num_train_timesteps: int = 1000) -> None:
        from ..testing import GaussianMixture

        self.gmm = GaussianMixture.from_digits()
        self.schedule_name = schedule
        self.schedule = gmm_schedule(schedule, num_train_timesteps)
        self.prediction_type = self.schedule.check_prediction_type(
            self.schedule.default_prediction_type if prediction_type is None else prediction_type)
        self.model = self.gmm.model(self.schedule, self.prediction_type)
        self.num_classes, self.class_names, self.prompts = None, None, None
        self.image_shape = None  # vectors, not images: FID/CLIP/classifier metrics do not apply
        default = self.schedule.default_prediction_type
        self.name = f"gmm:{schedule}" + ("" if self.prediction_type == default else f":{self.prediction_type}")

    def condition(self, indices: range) -> tuple[None, None]:
        return None, None

    def frames(self, method: Method, rows: range, labels, prompts, generator: Generator,
               steps: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        from ..nested import nested_sample
        from ..vanilla import vanilla_sample

        check_sampler(method, restoration=False)
        noise = randn_like(torch.empty(len(rows), self.gmm.dim, dtype=torch.float64), generator)
        common = dict(prediction_type=self.prediction_type, generator=generator)
        schedule = method.on(self.schedule)  # the same levels; the method's grid
        if method.kind == "nested":
            session = nested_sample(self.model, schedule, noise, **method.session_kwargs(), **common)
        else:
            session = vanilla_sample(self.model, schedule, noise, steps=steps or method.steps,
                                     sampler=method.sampler, eta=method.eta, **common)
        for frame in session:
            yield frame.nfe, frame.image

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return ((raw.reshape(len(raw), 1, 8, 8).float() + 1) / 2).clamp(0, 1)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name}


def _on_grid(session: Any, method: Method) -> Any:
    """A pipeline session whose core runs on the method's grid: the same model, start, condition and
    generators (the pipeline drew the noise and encoded the condition), the schedule re-spaced."""
    from ..nested import NestedSession
    from ..pipelines.session import PipelineSession
    from ..vanilla import VanillaSession

    core = session.core
    common = dict(prediction_type=core.prediction_type, generator=core.generator, model_kwargs=core.model_kwargs)
    schedule = method.on(core.schedule)
    if method.kind == "nested":
        new = NestedSession(core.model, schedule, core.x, **method.session_kwargs(), **common)
    else:
        new = VanillaSession(core.model, schedule, core.x, steps=core.num_steps, sampler=core.sampler, **common)
    return PipelineSession(session.pipeline, new, dict(session.condition), output_type="latent")


def gmm_schedule(name: str, num_train_timesteps: int = 1000):
    """The oracle's schedule from its name: ``linear``, ``scaled_linear``, ``cosine`` (discrete VP tables)
    or ``flow`` (shift 1), ``flow:SHIFT`` (a static shift, ``set_timesteps`` spacing as SD3), and
    ``flow:dynamic=N`` (Flux's dynamic shift for N latent tokens, e.g. 4096 at 1024², with Flux's trailing
    grid)."""
    from ..schedules import DiscreteVP, flow_matching, make_alphas_cumprod

    kind, _, arg = name.partition(":")
    if kind in GMM_SCHEDULES[:3] and not arg:
        return DiscreteVP(make_alphas_cumprod(kind, num_train_timesteps))
    if kind == "flow":
        if not arg:
            return flow_matching(num_train_timesteps=num_train_timesteps)
        if arg.startswith("dynamic="):
            try:
                tokens = int(arg[len("dynamic="):])
            except ValueError:
                tokens = 0
            if tokens < 1:
                raise ValueError(f"schedule 'flow:dynamic=N' needs N, a positive number of latent tokens, got {name!r}")
            return flow_matching(use_dynamic_shifting=True, spacing="trailing",
                                 num_train_timesteps=num_train_timesteps).at_image_seq_len(tokens)
        try:
            shift = float(arg)
        except ValueError:
            shift = float("nan")
        if not shift > 0 or shift == float("inf"):
            raise ValueError(f"schedule 'flow:SHIFT' needs a positive shift, got {name!r}")
        return flow_matching(shift, num_train_timesteps=num_train_timesteps)
    raise ValueError(f"schedule must be one of {list(GMM_SCHEDULES[:3])}, 'flow', 'flow:SHIFT' or 'flow:dynamic=N', "
                     f"got {name!r}")


def check_sampler(method: Method, restoration: bool) -> None:
    """DDRM methods belong to restoration targets (``--task``), the others to generation."""
    from .methods import DDRM

    if restoration and method.kind != "nested" and method.sampler != DDRM:
        raise ValueError(f"{method.name}: a restoration task compares DDRM runs: use the sampler 'ddrm' "
                         f"(e.g. vanilla ddrm:0.85, envelope ddrm:1)")
    if not restoration and method.sampler == DDRM:
        raise ValueError(f"{method.name}: the sampler 'ddrm' restores measurements: it needs a task (--task)")


def _fingerprint(model: str | None) -> str | None:
    """A local pipeline folder's identity (SHA-1 of its files' contents; sizes for files over 64 MB),
    so cached shards of a retrained or edited model are not reused."""
    import hashlib
    from pathlib import Path

    from ..models import resolve_model

    folder = Path(resolve_model(model))
    if not folder.is_dir():
        return None  # a hub id: the hub cache pins its revision
    digest = hashlib.sha1()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        digest.update(str(p.relative_to(folder)).encode())
        size = p.stat().st_size
        digest.update(p.read_bytes() if size <= 64 << 20 else str(size).encode())
    return digest.hexdigest()[:16]


def load_target(model: str | None, *, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                guidance_scale: float | None = None, prompts: Sequence[str] | None = None,
                height: int | None = None, width: int | None = None):
    """``None``: the embedded digit model; ``"gmm"``, ``"gmm:cosine"``, ``"gmm:cosine:v_prediction"``,
    ``"gmm:flow:3"``, ``"gmm:flow:dynamic=4096"``…: the oracle (default linear, with the schedule's
    prediction type: ε on VP, flow on flow); otherwise a diffusers folder or hub id."""
    if model is not None and (model == "gmm" or model.startswith("gmm:")):
        from ..schedules import PREDICTION_TYPES

        parts = model.split(":")[1:] or ["linear"]
        schedule = parts.pop(0)  # the schedule comes first; a flow schedule may take an argument next
        if schedule == "flow" and parts and parts[0] not in PREDICTION_TYPES:
            schedule += ":" + parts.pop(0)
        prediction_type = parts.pop(0) if parts else None
        if parts or (prediction_type is not None and prediction_type not in PREDICTION_TYPES):
            raise ValueError(f"model 'gmm[:SCHEDULE[:PREDICTION]]': prediction must be one of {list(PREDICTION_TYPES)}, "
                             f"got {model!r}")
        try:
            gmm_schedule(schedule)
        except ValueError as e:
            raise ValueError(f"model 'gmm[:SCHEDULE[:PREDICTION]]': {e}; prediction one of {list(PREDICTION_TYPES)}, "
                             f"got {model!r}") from None
        if prompts or guidance_scale is not None:
            raise ValueError("the Gaussian-mixture oracle is unconditional: no prompts or guidance_scale")
        return GMMTarget(schedule, prediction_type)
    from ..models import model_label
    from ..pipelines import NestedPipeline

    pipe = NestedPipeline.from_pretrained(model, dtype=dtype, device=device)
    return PipelineTarget(pipe, model_label(model), guidance_scale, prompts,
                          height, width, fingerprint=_fingerprint(model))
