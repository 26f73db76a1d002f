"""``NestedPipeline``: nested (and vanilla-with-previews) sampling for loaded diffusers pipelines.

The registry of families lives here: each family is a thin adapter (:mod:`.adapter`) exposing the
pipeline's own noise schedule (from its scheduler), prediction type, initial noise, a guided network
call (classifier-free guidance in one doubled batch = one NFE) and decoding. The sampling itself is
the model-agnostic core (:mod:`nested_diffusion.nested`, :mod:`nested_diffusion.vanilla`); no
pipeline ``__call__`` is copied. Families import only :mod:`.adapter`, never this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..nested import NestedSession
from ..defaults import DEFAULT_BUDGET
from ..planner import plan_schedule, resolve_layout
from ..samplers import make_sampler
from ..samplers.blend import Blend
from ..vanilla import VanillaSession
from .adapter import Adapter, UnsupportedPipelineError, check_condition_keys
from .dit import DiTAdapter
from .editing import edit_timesteps, prepare_edit
from .flux import FluxAdapter
from .sd3 import StableDiffusion3Adapter
from .session import PipelineFrame, PipelineSession, to_pixels
from .stable_diffusion import StableDiffusionAdapter, StableDiffusionXLAdapter
from .unet2d import UNet2DAdapter

__all__ = ["NestedPipeline", "ADAPTERS"]

#: Supported families, tried in order by :meth:`NestedPipeline.from_pipe` (no pipeline class here derives
#: from another, so the order does not matter): pixel UNets, SD 1.x/2.x, SDXL, DiT (VP schedules) and
#: SD3/3.5, Flux.1 (flow matching).
ADAPTERS: list[type] = [UNet2DAdapter, StableDiffusionAdapter, StableDiffusionXLAdapter, DiTAdapter,
                        StableDiffusion3Adapter, FluxAdapter]


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
        """The supported families (:data:`ADAPTERS`)."""
        return list(ADAPTERS)

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
    def from_pretrained(cls, model: str | os.PathLike | None = None, *, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, torch_dtype: torch.dtype | None = None,
                        **kwargs: Any) -> "NestedPipeline":
        """Load with diffusers' ``DiffusionPipeline.from_pretrained`` (hub id or local folder);
        ``None`` loads the embedded MNIST digit model, offline, and ``"embedded:NAME"`` an embedded model by
        name (``embedded:digits``, ``embedded:digits-flow``: :func:`~nested_diffusion.models.resolve_model`).
        ``dtype`` (or its older diffusers name ``torch_dtype``) is passed under the name the installed
        diffusers expects."""
        from ..models import resolve_model

        path = resolve_model(model)
        text = os.fspath(path)
        local = Path(text).expanduser()
        if local.exists():
            if not local.is_dir():
                raise ValueError(f"model {text!r} is a file; expected a diffusers pipeline folder or a hub id")
            if not (local / "model_index.json").is_file():
                raise ValueError(f"model folder {text!r} has no model_index.json: not a diffusers pipeline folder")
        elif text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
            raise ValueError(f"model folder {text!r} does not exist")
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype ({dtype}) and torch_dtype ({torch_dtype}) disagree: give one")
        dtype = dtype if dtype is not None else torch_dtype
        import diffusers
        from diffusers import DiffusionPipeline

        if dtype is not None:  # diffusers 0.40 renamed torch_dtype to dtype (the old name warns)
            kwargs[_dtype_keyword(diffusers.__version__)] = dtype
        try:
            pipe = DiffusionPipeline.from_pretrained(str(local) if local.exists() else text, **kwargs)
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
                true_cfg_scale: float | None = None, outer_steps: int | None = None, inner_steps: int | Sequence[int] | None = None,
                budget: int | None = None, inner_sampler: str | None = None,
                inner_eta: float | Sequence[float] | None = None, outer_eta: float | None = None,
                outer_timesteps: Sequence[int] | None = None, outer_update: str | None = None,
                num_inference_steps: int = 100, sampler: str = "ddim", eta: float | None = 1.0,
                generator: Any = None, height: int | None = None, width: int | None = None,
                output_type: str = "pil", decode_every: int = 1,
                latents: torch.Tensor | None = None, image: Any = None, strength: float | None = None,
                mask_image: Any = None, inner_spacing: str | Sequence[str | None] | None = None,
                inner_grid_end: float | None = None) -> PipelineSession:
        """A resumable session: ``method="nested"`` (frames = inner-run samples) or ``"vanilla"``
        (frames = one-step x̂0 previews of a ``num_inference_steps`` sampler).

        Editing, in diffusers' words: ``image`` (PIL, array or tensor in [0, 1]) with ``strength`` s in (0, 1]
        is image-to-image (SDEdit: the input noised to the strength's level; default 0.8); with ``mask_image``
        (white = repaint; default strength 1) it is inpainting. A vanilla edit runs the last ``int(N·s)`` steps
        of the N-step grid (the family's own ``get_timesteps`` rule), from the same initial noise as diffusers'
        img2img / inpaint pipelines; a nested edit starts its outer process at that level and spends the whole
        ``budget`` below it. Inpainting blends the known region (re-noised to each step's level) after every
        inner and outer step — or, for a dedicated inpainting network (9-channel UNets), passes the mask and the
        masked image's latents as its extra inputs. Pixel-space models inpaint with nested DDRM instead
        (:meth:`restore`, exact for a mask; strength 1).

        ``guidance_scale`` is classifier-free guidance (SD, SDXL, DiT, SD3, pixel UNets) or the guidance
        embedding of a guidance-distilled network (Flux.1-dev); ``true_cfg_scale`` with a
        ``negative_prompt`` is Flux's true classifier-free guidance (one doubled batch per NFE).

        Nested defaults are the project's measured layout: with neither ``outer_steps``,
        ``inner_steps`` nor ``outer_timesteps``, :func:`~nested_diffusion.planner.plan_layout` for
        ``budget`` NFEs (default 100) and this model's noise schedule; give ``outer_steps=10,
        inner_steps=10, inner_sampler="ddim"`` for the paper's layout. The rules for partial layouts
        are :func:`~nested_diffusion.planner.resolve_layout`'s; ``inner_spacing`` (e.g. ``"karras"``, or one name per
        outer step) grids the inner runs and ``inner_grid_end`` (a noise level σ/α) ends their Karras and log-SNR grids,
        so ``plan_layout(...).session_kwargs()`` replays the plan exactly.

        ``latents`` (optional) is the initial noise x_T, like diffusers' ``latents=``; by default it
        is drawn from ``generator`` (one ``torch.Generator``, or a list with one per image, as in
        diffusers) exactly as the diffusers pipeline draws it."""
        if method not in ("nested", "vanilla"):
            raise ValueError(f"method must be 'nested' or 'vanilla', got {method!r}")
        condition = dict(prompt=prompt, negative_prompt=negative_prompt, class_labels=class_labels,
                         guidance_scale=guidance_scale)
        if true_cfg_scale is not None:  # Flux's true classifier-free guidance (families that have it take it)
            condition["true_cfg_scale"] = true_cfg_scale
        if method == "vanilla" and budget is not None:
            raise ValueError("budget plans a nested layout; a vanilla session takes num_inference_steps")
        if image is None and (strength is not None or mask_image is not None):
            raise ValueError("strength and mask_image edit an input: give image too")
        a = self.adapter
        edit = None
        if image is not None:
            if latents is not None:
                raise ValueError("latents is a text-to-image start; an edit starts from image")
            if mask_image is not None and getattr(a, "pixel_space", False):
                raise ValueError("pixel-space models inpaint with nested DDRM, exact for a mask: use "
                                 "NestedPipeline.restore(image, Inpainting(mask), sigma_y) (or `nested-diffusion edit`)")
            model_kwargs, edit, height, width = self._start_edit(condition, num_images, generator, image, mask_image,
                                                                 strength, height, width)
            noise = edit.noise
        else:
            model_kwargs, noise = self._start(condition, num_images, generator, latents, height, width)
        schedule = a.schedule_for(height, width)
        common = dict(prediction_type=a.prediction_type, generator=generator, model_kwargs=model_kwargs)
        if method == "nested":
            start = None
            if edit is not None and outer_steps is None and inner_steps is None and outer_timesteps is None:
                start = edit_timesteps(a, schedule, DEFAULT_BUDGET if budget is None else budget, edit.strength)[0][0]
            elif edit is not None and outer_timesteps is None:  # counts: the outer grid of the matching vanilla edit
                count = len(inner_steps) if isinstance(inner_steps, (list, tuple)) else outer_steps
                if count is None:
                    count = resolve_layout(schedule, outer_steps=outer_steps, inner_steps=inner_steps,
                                           budget=budget).outer_timesteps.__len__()
                outer_timesteps = edit_timesteps(a, schedule, count, edit.strength)[0]
            layout = resolve_layout(schedule, outer_steps=outer_steps, inner_steps=inner_steps, budget=budget,
                                    inner_sampler=inner_sampler, inner_eta=inner_eta, outer_eta=outer_eta,
                                    outer_timesteps=outer_timesteps, outer_update=outer_update, start=start,
                                    inner_spacing=inner_spacing, inner_grid_end=inner_grid_end)
            kwargs = layout.session_kwargs()
            if edit is not None:
                kwargs.update(_edit_samplers(edit, kwargs, len(layout.inner_steps)), start=edit.start)
            core = NestedSession(a, schedule, noise, **kwargs, **common)
        elif edit is not None:
            kept = a.kept_steps(num_inference_steps, edit.strength)
            if kept < 1:
                raise ValueError(f"strength {edit.strength:g} leaves no step of num_inference_steps "
                                 f"{num_inference_steps}: raise either")
            named = make_sampler(sampler, eta)
            core = VanillaSession(a, schedule, noise, steps=kept, timesteps=schedule.timesteps(num_inference_steps)[-kept:],
                                  sampler=Blend(named, edit.image, edit.mask, edit.noise) if edit.blends else named,
                                  start=edit.start, **common)
        else:
            core = VanillaSession(a, schedule, noise, steps=num_inference_steps, sampler=sampler, eta=eta, **common)
        return PipelineSession(self, core, condition, output_type=output_type, decode_every=decode_every, edit=edit)

    def _encode(self, condition: dict[str, Any], num_images: int | None) -> tuple[int, dict[str, Any]]:
        """``(num_images, model_kwargs)``: the batch size (given, or from the prompts / labels) checked and the
        condition encoded by the adapter, before any random draw (as diffusers encodes the prompt first)."""
        if num_images is None:
            num_images = _batch_size(condition.get("prompt"), condition.get("class_labels"))
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
        check_condition_keys(self.adapter, condition)
        with torch.inference_mode():
            return num_images, self.adapter.condition(num_images, **condition)

    def _start_edit(self, condition: dict[str, Any], num_images: int | None, generator: Any, image: Any,
                    mask_image: Any, strength: float | None, height: int | None, width: int | None
                    ) -> tuple[dict[str, Any], Any, int, int]:
        """Validated ``(model_kwargs, edit, height, width)`` of a new edit (see :func:`~.editing.prepare_edit`);
        the condition is checked before the random draws, as diffusers encodes the prompt first."""
        num_images, model_kwargs = self._encode(condition, num_images)
        edit, height, width = prepare_edit(self.adapter, image, mask_image, strength, num_images, generator, height,
                                           width)
        model_kwargs.update(edit.network_inputs)
        return model_kwargs, edit, height, width

    def _start(self, condition: dict[str, Any], num_images: int | None, generator: Any,
               latents: torch.Tensor | None, height: int | None, width: int | None,
               dtype: torch.dtype | None = None) -> tuple[dict[str, Any], torch.Tensor]:
        """Validated ``(model_kwargs, x_T)`` of a new session: the condition encoded by the adapter
        and the initial noise — ``latents`` if given, else drawn from ``generator`` as the diffusers
        pipeline draws it (in ``dtype``, default the model's)."""
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or not latents.is_floating_point() or latents.ndim < 2:
                raise ValueError("latents must be a floating-point tensor [num_images, channels, ...]")
            if num_images is None:
                num_images = latents.shape[0]
        num_images, model_kwargs = self._encode(condition, num_images)
        a = self.adapter
        with torch.inference_mode():
            if latents is None:
                noise = a.initial_noise(num_images, generator, height=height, width=width)
            else:
                expected = tuple(a.latent_shape(num_images, height, width))
                if latents.shape[0] != num_images:
                    raise ValueError(f"latents must hold {num_images} images (first dimension), "
                                     f"got shape {tuple(latents.shape)}")
                if tuple(latents.shape) != expected:
                    raise ValueError(f"latents must have shape {expected}, got {tuple(latents.shape)}")
                noise = latents.to(device=a.device, dtype=a.dtype)
        return model_kwargs, noise.to(dtype or noise.dtype)

    def restore(self, image: Any = None, operator: Any = None, sigma_y: float = 0.0, *,
                measurement: torch.Tensor | None = None, method: str = "nested", class_labels: Any = None,
                guidance_scale: float | None = None, num_images: int | None = None,
                outer_steps: int | None = None, inner_steps: int | Sequence[int] | None = None,
                budget: int | None = None, inner: str = "ddrm", eta: float | None = None,
                eta_b: float | None = None, outer_eta: float | None = None, steps: int = 100,
                generator: Any = None, height: int | None = None, width: int | None = None,
                output_type: str = "pil", decode_every: int = 1,
                latents: torch.Tensor | None = None) -> PipelineSession:
        """Anytime restoration of a linear measurement y = H x + σ_y n (PAPER.md, "Inverse problems"):
        ``method="nested"`` (:func:`~nested_diffusion.restoration.nested_restore`, every frame a
        measurement-consistent restoration) or ``"ddrm"`` (:func:`~nested_diffusion.restoration.ddrm_sample`
        with ``steps`` network calls, frames = its x̂0 previews).

        ``image`` is what was observed, as pixels in [0, 1] (PIL, array or tensor; see
        :func:`~.session.to_pixels`): in the operator's measurement shape it *is* y (the small image of a
        super-resolution, a blurred or noisy image); in the model's image shape it is measured by H
        (``y = H image``: an inpainting input is the whole picture, its unobserved pixels ignored).
        Or give ``measurement`` in the operator's own shape, on the model's [-1, 1] scale, e.g.
        ``operator.measure(x, sigma_y, generator)`` to simulate one. ``sigma_y`` is the noise std of
        y on that scale; nothing is added here. One restoration per measurement; ``num_images`` > 1
        with a single measurement draws that many (posterior samples). Pixel-space models only: H acts
        on pixels, and a latent model's decoder is nonlinear.
        """
        from ..restoration import DDRMSession, LinearOperator, NestedRestoreSession

        a = self.adapter
        if not getattr(a, "pixel_space", False):
            raise ValueError(f"restoration needs a pixel-space model: H acts on pixels, but this {a.family} model "
                             "samples VAE latents, and the VAE decoder is nonlinear, so a linear measurement of the "
                             "image is not a linear measurement of the latents")
        if method not in ("nested", "ddrm"):
            raise ValueError(f"method must be 'nested' or 'ddrm', got {method!r}")
        if not isinstance(operator, LinearOperator):
            raise TypeError("operator must be a nested_diffusion.restoration operator (Inpainting, SuperResolution, "
                            f"Deblur, Colorization, Denoising, Dense), got {type(operator).__name__}")
        if (image is None) == (measurement is None):
            raise ValueError("give exactly one of image (the observed pixels) and measurement (y itself)")
        item = tuple(a.latent_shape(1, height, width)[1:])
        y = self._measurement(operator, item, image, measurement)
        if num_images is None:
            num_images = len(y)
        if len(y) == 1 and num_images > 1:
            y = y.expand(num_images, *y.shape[1:])
        if len(y) != num_images:
            raise ValueError(f"num_images ({num_images}) must equal the number of measurements ({len(y)}) or "
                             "there must be one measurement")
        condition = dict(class_labels=class_labels, guidance_scale=guidance_scale)
        # the spectral arithmetic runs in the state's dtype: at least float32 for half-precision models
        model_kwargs, noise = self._start(condition, num_images, generator, latents, height, width,
                                          dtype=torch.promote_types(a.dtype, torch.float32))
        common = dict(operator=operator, measurement=y.to(noise.device, noise.dtype), sigma_y=sigma_y,
                      prediction_type=a.prediction_type, generator=generator, model_kwargs=model_kwargs)
        etas = {k: v for k, v in (("eta", eta), ("eta_b", eta_b)) if v is not None}
        schedule = a.schedule_for(height, width)
        if method == "nested":
            if budget is not None and outer_steps is None and inner_steps is None:
                inner_steps = plan_schedule(budget, max_steps=schedule.max_steps)
            layout = resolve_layout(schedule, outer_steps=outer_steps, inner_steps=inner_steps, budget=budget)
            core = NestedRestoreSession(a, schedule, noise, outer_steps=len(layout.inner_steps),
                                        inner_steps=layout.inner_steps, inner=inner, outer_eta=outer_eta, **etas,
                                        **common)
        else:
            if budget is not None or outer_steps is not None or inner_steps is not None:
                raise ValueError("budget, outer_steps and inner_steps plan a nested layout; DDRM takes steps")
            core = DDRMSession(a, schedule, noise, steps=steps, **etas, **common)
        return PipelineSession(self, core, condition, output_type=output_type, decode_every=decode_every)

    @staticmethod
    def _measurement(operator: Any, item: tuple[int, ...], image: Any, measurement: Any) -> torch.Tensor:
        """y on the model's [-1, 1] scale from the observed ``image`` (see :meth:`restore`) or as given."""
        wanted = tuple(operator.measurement_shape(item))
        if measurement is not None:
            if not isinstance(measurement, torch.Tensor) or not measurement.is_floating_point():
                raise TypeError(f"measurement must be a float tensor of shape (N, {', '.join(map(str, wanted))})")
            return measurement.detach()
        pixels = to_pixels(image, item[0]) * 2 - 1
        shape = tuple(pixels.shape[1:])
        if shape == wanted:
            return pixels
        if shape == item:
            return operator(pixels)
        raise ValueError(f"image has shape {shape}: expected the measurement's {wanted} (y itself) or the model's "
                         f"{item} (measured by {operator!r})")

    def anytime(self, **kwargs: Any) -> PipelineSession:
        """Nested diffusion: iterate for one decoded frame per outer step."""
        return self.session("nested", **kwargs)

    def vanilla(self, **kwargs: Any) -> PipelineSession:
        """The baseline: one x̂0-preview frame per network call (``num_inference_steps``)."""
        return self.session("vanilla", **kwargs)

    def __call__(self, **kwargs: Any) -> PipelineFrame:
        """Run nested sampling to the end and return the final frame (``.images``)."""
        return self.anytime(**kwargs).run()


def _edit_samplers(edit: Any, kwargs: dict[str, Any], steps: int) -> dict[str, Any]:
    """A nested edit's samplers: with blending, every inner step and every outer step keeps the known region."""
    if not edit.blends:
        return {}
    from ..nested import _inner_samplers, _outer_sampler

    wrap = lambda s: Blend(s, edit.image, edit.mask, edit.noise)  # noqa: E731
    inner = [wrap(s) for s in _inner_samplers(kwargs["inner_sampler"], kwargs.get("inner_eta"), steps)]
    return {"inner_sampler": inner, "inner_eta": None,
            "outer_update": wrap(_outer_sampler(kwargs["outer_update"], kwargs.pop("outer_eta", None)))}


def _dtype_keyword(diffusers_version: str) -> str:
    """``"dtype"`` for diffusers >= 0.40, else ``"torch_dtype"``."""
    major, minor = (int("".join(c for c in part if c.isdigit()) or 0) for part in diffusers_version.split(".")[:2])
    return "dtype" if (major, minor) >= (0, 40) else "torch_dtype"


def _batch_size(prompt: Any, class_labels: Any) -> int:
    if isinstance(prompt, (list, tuple)):
        return len(prompt)
    if class_labels is not None:
        n = torch.as_tensor(class_labels).numel()
        return max(n, 1)
    return 1
