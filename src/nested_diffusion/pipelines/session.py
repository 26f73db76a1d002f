"""``PipelineSession``: a core session whose frames are decoded by a pipeline adapter, with the
paper's interventions (change the condition between outer steps, fork, stop at a budget or deadline)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from ..session import CancelToken, Session, check_indices
from ..images import to_pixels
from .adapter import check_condition_keys

__all__ = ["PipelineSession", "PipelineFrame", "OUTPUT_TYPES", "to_output", "to_pixels"]

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


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

    def __init__(self, pipeline: Any, core: Session, condition: dict[str, Any],
                 output_type: str = "pil", decode_every: int = 1, edit: Any = None) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if isinstance(decode_every, bool) or not isinstance(decode_every, int) or decode_every < 1:
            raise ValueError(f"decode_every must be a positive integer, got {decode_every!r}")
        self.pipeline, self.core, self.output_type, self.decode_every = pipeline, core, output_type, decode_every
        self.condition = condition  # the user-level arguments, kept for set_condition
        self.edit = edit  # an edit's input latents, noise and mask (pipelines.editing.Edit), or None
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
        """Change ``prompt``, ``negative_prompt``, ``class_labels``, ``guidance_scale`` (or Flux's
        ``true_cfg_scale``) for the steps that follow — every embedding the network sees (token and pooled
        embeddings, the guidance value) is re-encoded; frames already produced are unaffected."""
        allowed = {"prompt", "negative_prompt", "class_labels", "guidance_scale", "true_cfg_scale"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"set_condition accepts {sorted(allowed)}, got {sorted(unknown)}")
        condition = {**self.condition, **changes}
        check_condition_keys(self.pipeline.adapter, condition)
        with torch.inference_mode():
            model_kwargs = self.pipeline.adapter.condition(len(self.core.x), **condition)
        if self.edit is not None:  # an inpainting network's mask and masked-image latents are not a condition
            model_kwargs.update({k: self.core.model_kwargs[k] for k in self.edit.network_inputs})
        self.core.model_kwargs = model_kwargs
        self.condition = condition

    def set_edit(self, *, mask_image: Any = None, strength: float | None = None) -> None:
        """Change an edit for the steps that follow (frames already produced are unaffected):

        * ``mask_image`` (white = repaint, the input's size): the blended known region — or a dedicated
          inpainting network's mask and masked-image latents (encoded with the VAE's mode: no random draw);
        * ``strength`` (nested edits): the outer process restarts from the input noised (fresh noise from the
          session's generator) to the new strength's level and spends the NFEs left of the session's total
          below it (the planned layout for that many NFEs).
        """
        from .editing import check_strength, edit_timesteps

        if self.edit is None:
            raise ValueError("set_edit changes an edit: this session was not started with image=")
        adapter, core = self.pipeline.adapter, self.core
        if strength is not None:  # checked before anything changes
            strength = check_strength(strength)
            if not hasattr(core, "replan"):
                raise ValueError("a new strength restarts the outer process of a nested edit; a vanilla edit keeps its "
                                 "grid (start a new session)")
        edit = dataclasses.replace(self.edit)  # forks share an Edit: replace it, never change it in place
        if mask_image is not None:
            if edit.mask is None:
                raise ValueError("mask_image changes an inpainting edit; this image-to-image edit has none")
            h, w = edit.mask_pixels.shape[-2:]
            raw = to_pixels(mask_image, 1, name="mask_image")
            if tuple(raw.shape[-2:]) != (h, w) or len(raw) not in (1, len(core.x)):
                raise ValueError(f"mask_image must be one mask (or one per image) of the input's size {w}×{h}")
            pixels = adapter.preprocess_mask(raw, h, w)
            pixels = pixels.expand(len(core.x), *pixels.shape[1:])
            with torch.inference_mode():
                mask = adapter.latent_mask(pixels)
                if edit.network_inputs:
                    masked = adapter.encode(edit.pixels * (pixels < 0.5), sample=False)
                    core.model_kwargs = {**core.model_kwargs, "mask": mask, "masked_image_latents": masked}
                    edit.network_inputs = {"mask": mask, "masked_image_latents": masked}
            core.samplers = _with_mask(core.samplers, mask)
            edit.mask, edit.mask_pixels = mask, pixels
        if strength is not None and not core.done:
            from ..planner import resolve_layout
            from ..samplers.noise import randn_like

            left = core.total_nfe - core.nfe
            start = edit_timesteps(adapter, core.schedule, left, strength)[0][0]
            layout = resolve_layout(core.schedule, budget=left, start=start)
            with torch.inference_mode():
                if edit.image is None:  # never encoded (an inpainting network at full strength): the VAE's mode
                    edit.image = adapter.encode(edit.pixels, sample=False)
                x = edit.noised(randn_like(core.x, core.generator), core.schedule.level(start))
            core.replan(x, layout.outer_timesteps, layout.inner_steps)
            edit.strength = strength
        self.edit = edit

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

    def step(self, deadline: float | None = None, cancel: CancelToken | None = None) -> PipelineFrame:
        """One step, decoded (see :meth:`Session.step` for ``deadline`` and ``cancel``: an
        interrupted step raises and leaves the session exactly as before)."""
        with torch.inference_mode():
            frame = self.core.step(deadline, cancel)
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

    def __repr__(self) -> str:
        condition = ", ".join(f"{k}={v!r}" for k, v in self.condition.items() if v is not None)
        return (f"PipelineSession({self.pipeline.adapter.family}, step {self.core.k}/{self.core.num_steps}, "
                f"nfe {self.core.nfe}/{self.core.total_nfe}, {type(self.core).__name__}"
                f"{', ' + condition if condition else ''})")

    def fork(self, generator: torch.Generator | None = None, indices: Sequence[int] | None = None) -> "PipelineSession":
        """Independent continuation (see :meth:`Session.fork`); ``indices`` keeps only those images
        (``[i] * 4``: four continuations of image i), selecting the per-image condition with them."""
        if indices is None:
            child = PipelineSession(self.pipeline, self.core.fork(generator), dict(self.condition),
                                    self.output_type, self.decode_every, self.edit)
            child.last_frame, child._source = self.last_frame, self._source
            return child
        size = len(self.core.x)
        rows = check_indices(indices, size)
        condition = {k: _select_images(v, rows, size) for k, v in self.condition.items()}
        child = PipelineSession(self.pipeline, self.core.fork(generator, rows), condition,
                                self.output_type, self.decode_every,
                                None if self.edit is None else self.edit.select_rows(rows))
        if self.last_frame is not None:
            child._source = child.core.last_frame
            images = self.last_frame.images
            child.last_frame = dataclasses.replace(
                self.last_frame, latents=child.core.last_frame.image,
                images=None if images is None else _select_images(images, rows, size))
        return child


def _with_mask(value: Any, mask: torch.Tensor) -> Any:
    """The samplers of a session with every latent blend given ``mask``."""
    if callable(getattr(value, "with_mask", None)):
        return value.with_mask(mask)
    if isinstance(value, dict):
        return {k: _with_mask(v, mask) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_with_mask(v, mask) for v in value)
    return value


def _select_images(value: Any, rows: list[int], size: int) -> Any:
    """Rows ``rows`` of a per-image value (a list of prompts, labels or PIL images, an array or a
    tensor of ``size`` rows); a single value shared by every image is kept as it is. A list whose
    length divides ``size`` (prompts with several images each, adjacent as in diffusers'
    ``num_images_per_prompt``) is first repeated to one entry per image."""
    if isinstance(value, (list, tuple)) and len(value) > 1 and size % len(value) == 0:
        per = size // len(value)
        return [value[i // per] for i in rows]
    if hasattr(value, "shape") and len(value.shape) > 0 and value.shape[0] == size:
        return value[rows] if not isinstance(value, torch.Tensor) else value[torch.tensor(rows, device=value.device)]
    return value
