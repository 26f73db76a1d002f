"""Edits in the studio: a session's input and mask as the model takes them, the library route that runs
them, and the one function applying a change at a step boundary — the server's and :mod:`.replay`'s.

Routes (:func:`route`), as ``nested-diffusion edit`` takes them: an inpainting mask on a pixel-space model
is nested DDRM (``NestedPipeline.restore(image, Inpainting(kept), 0)``: with σ_y = 0 the kept pixels are
exact in every frame); everything else with an ``image`` is ``NestedPipeline.anytime(image=, mask_image=,
strength=)`` (image-to-image, latent blending, or a dedicated inpainting network's extra inputs).

A session holds its input and masks *prepared*: in the model's mode (gray for a one-channel pixel model,
else RGB) at the edit's size (:func:`edit_size`; the input resized with Lanczos, a mask with nearest and
binarized at 128: white = repaint), each a :class:`~.uploads.StoredImage` named by its pixels, so that a
log can carry exactly what the library was given.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from .state import EDIT_FIELDS
from .uploads import StoredImage, stored

__all__ = ["route", "editing_info", "edit_size", "prepare_input", "prepare_mask", "kept_pixels", "measured",
           "strength_of", "apply_changes", "EDIT_FIELDS"]


def route(adapter: Any, request: Mapping[str, Any]) -> str | None:
    """``"ddrm"`` (a mask on a pixel-space model), ``"edit"`` (any other request with an image) or ``None``."""
    if request.get("image") is None:
        return None
    return "ddrm" if request.get("mask_image") is not None and getattr(adapter, "pixel_space", False) else "edit"


def editing_info(adapter: Any) -> dict[str, Any]:
    """What clients need to offer edits on this model (``GET /v1/health``'s ``editing``)."""
    from ..pipelines.editing import DEFAULT_STRENGTH

    pixel = bool(getattr(adapter, "pixel_space", False))
    network = bool(getattr(adapter, "extra_channels", 0))
    return {"image_to_image": not network, "inpainting": "nested DDRM" if pixel else
            "inpainting network" if network else "latent blending", "mask_required": network,
            "strength_with_mask": not pixel, "default_strength": DEFAULT_STRENGTH,
            "mode": "L" if pixel and adapter.channels == 1 else "RGB"}


def edit_size(size_rule: tuple[tuple[int, int], int], source: tuple[int, int], height: int | None,
              width: int | None, max_side: int) -> tuple[int, int]:
    """``(height, width)`` of an edit of an image ``source = (width, height)`` pixels: as given, else the
    image's own rounded down to the model's multiple (as diffusers' image processor does). ``ValueError``
    when that size is outside ``[multiple, max_side]``."""
    _, multiple = size_rule
    side = max(multiple, max_side // multiple * multiple)
    out = []
    for name, given, own in (("height", height, source[1]), ("width", width, source[0])):
        value = given if given is not None else own // multiple * multiple
        if not multiple <= value <= side:
            raise ValueError(f"the image is {source[0]}×{source[1]} pixels: its {name} makes an edit of {value} "
                             f"pixels, outside [{multiple}, {side}] (a multiple of {multiple}); give height and width")
        out.append(value)
    return out[0], out[1]


def _mode(adapter: Any) -> str:
    return "L" if getattr(adapter, "pixel_space", False) and adapter.channels == 1 else "RGB"


def prepare_input(adapter: Any, image: StoredImage, height: int, width: int) -> StoredImage:
    """The input in the model's mode at ``height × width`` (Lanczos, as diffusers' PIL resizing)."""
    from PIL import Image

    picture = image.image.convert(_mode(adapter)) if image.image.mode != _mode(adapter) else image.image
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.LANCZOS)
    return image if picture is image.image else stored(picture)


def prepare_mask(mask: StoredImage, sizes: list[tuple[int, int]], height: int, width: int) -> StoredImage:
    """A mask (white = repaint) of one of ``sizes`` (``(width, height)``: the uploaded input's, the edit's),
    gray at ``height × width`` (nearest) and binarized at 128 to {0, 255}. ``ValueError`` for another size."""
    from PIL import Image

    if mask.size not in sizes:
        wanted = " or ".join(f"{w}×{h}" for w, h in dict.fromkeys(sizes))
        raise ValueError(f"mask_image must have the input's size {wanted}, got {mask.size[0]}×{mask.size[1]}")
    picture = mask.image.convert("L")
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.NEAREST)
    binary = Image.fromarray(np.where(np.asarray(picture) >= 128, 255, 0).astype(np.uint8), mode="L")
    same = mask.image.mode == "L" and np.array_equal(np.asarray(binary), np.asarray(mask.image))
    return mask if same else stored(binary)


def kept_pixels(mask: Any, channels: int) -> torch.Tensor:
    """The observed pixels of a prepared mask for :class:`~nested_diffusion.restoration.Inpainting`: ``True``
    where black (kept), one item's shape ``(channels, height, width)``. ``ValueError`` if it repaints everything."""
    keep = torch.from_numpy(np.asarray(mask) < 128)[None].expand(channels, -1, -1)
    if not keep.any():
        raise ValueError("mask_image repaints every pixel: inpainting on this pixel-space model is nested DDRM, "
                         "which needs some kept pixels (white = repaint, black = keep)")
    return keep


def measured(operator: Any, image: Any, channels: int) -> torch.Tensor:
    """y = H x of the input (on the model's [-1, 1] scale), one measurement."""
    from ..pipelines.session import to_pixels

    return operator(to_pixels(image, channels) * 2 - 1)


def strength_of(request: Mapping[str, Any]) -> float:
    """The strength an edit runs with: the request's, else diffusers' default for its kind."""
    from ..pipelines.editing import DEFAULT_STRENGTH

    if request.get("strength") is not None:
        return request["strength"]
    return DEFAULT_STRENGTH["inpaint" if request.get("mask_image") is not None else "img2img"]


def apply_changes(session: Any, changes: Mapping[str, Any], request: Mapping[str, Any],
                  images: Mapping[str, StoredImage]) -> None:
    """Apply a step boundary's changes to a library session: the condition fields
    (:meth:`~nested_diffusion.pipelines.PipelineSession.set_condition`), a new ``mask_image`` (an id of
    ``images``: ``set_edit`` or, on the DDRM route, a new measurement of the input) and a new ``strength``
    (``set_edit``: a nested edit's outer process restarts within the NFEs left)."""
    condition = {k: v for k, v in changes.items() if k not in EDIT_FIELDS}
    if condition:
        session.set_condition(**condition)
    adapter = session.pipeline.adapter
    if changes.get("mask_image") is not None:
        mask = images[changes["mask_image"]].image
        if route(adapter, request) == "ddrm":
            from ..restoration import Inpainting

            operator = Inpainting(kept_pixels(mask, adapter.channels))
            session.core.set_measurement(measured(operator, images[request["image"]].image, adapter.channels),
                                         operator=operator)
        else:
            session.set_edit(mask_image=mask)
    if changes.get("strength") is not None:
        session.set_edit(strength=changes["strength"])
