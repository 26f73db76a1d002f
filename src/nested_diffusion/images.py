"""Loading user images safely — the one loader of ``edit``, ``restore --input`` and the studio's uploads —
and :func:`to_pixels`, the one conversion of a user's image (PIL, array or tensor) to a pixel tensor.

Only PNG, JPEG and WebP are accepted, and the pixel count is checked from the header *before* anything is
decoded (Pillow's decompression-bomb guard is turned into an error too), so a huge or hostile file costs
nothing; a non-image, a truncated file or another format is a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["load_image", "to_pixels", "ImageFormatError", "FORMATS", "MAX_PIXELS"]

#: the formats a user may give (Pillow's names) and their file suffixes, for messages
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
#: at most this many pixels (width × height) are decoded: 4096 × 4096
MAX_PIXELS = 4096 * 4096


class ImageFormatError(ValueError):
    """The input is not an accepted image; ``kind`` says why: ``"missing"`` (no such file), ``"format"`` (not
    PNG / JPEG / WebP, or not an image at all), ``"size"`` (over the pixel limit) or ``"corrupt"`` (truncated)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def load_image(source: str | os.PathLike | bytes, *, name: str = "image", mode: str | None = None,
               max_pixels: int = MAX_PIXELS) -> Any:
    """A decoded PIL image from a path or the bytes of a file, converted to ``mode`` (e.g. ``"RGB"``, ``"L"``).

    Raises :class:`ImageFormatError` (a ``ValueError``) naming ``name`` when the file is missing or unreadable,
    not an image, not PNG / JPEG / WebP, larger than ``max_pixels`` (checked before decoding) or truncated."""
    from PIL import Image, UnidentifiedImageError

    accepted = "PNG, JPEG or WebP"
    if isinstance(source, (bytes, bytearray)):
        stream: Any = io.BytesIO(source)
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ImageFormatError(f"{name} {path!r} is not a file", "missing")
        stream = path
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(stream, formats=list(FORMATS))  # reads the header only
        except UnidentifiedImageError:
            raise ImageFormatError(f"{name} is not a {accepted} file", "format") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageFormatError(f"{name} has more than {max_pixels} pixels (at most {max_pixels})", "size") from None
        except OSError as e:
            raise ImageFormatError(f"{name} cannot be read: {e}", "corrupt") from None
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageFormatError(f"{name} is {width}×{height} = {width * height} pixels; at most {max_pixels} "
                                       "are accepted", "size")
            try:
                image.load()
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
                raise ImageFormatError(f"{name} is truncated or corrupt ({e})", "corrupt") from None
            return image.convert(mode) if mode is not None else image.copy()


def to_pixels(image: Any, channels: int, name: str = "image") -> torch.Tensor:
    """The inverse of :func:`~nested_diffusion.pipelines.session.to_output`: PIL image(s), a uint8 or float (in [0, 1]) NHWC / HWC
    array, or a float ``[N, C, H, W]`` / ``[C, H, W]`` tensor in [0, 1] → float32 ``[N, channels,
    H, W]`` in [0, 1] (PIL images are converted to ``L`` or ``RGB``; a mask, ``channels=1`` and ``name``
    ``mask_image``, may come in any number of channels and is averaged to gray). Errors name ``name``."""
    import numpy as np
    import torch

    gray = name == "mask_image"
    if gray and isinstance(image, np.ndarray) and image.ndim == 2:
        image = image[..., None]
    if gray and isinstance(image, torch.Tensor) and image.ndim == 2:
        image = image[None]
    images = image if isinstance(image, (list, tuple)) else [image]
    if images and all(hasattr(im, "convert") and hasattr(im, "size") for im in images):  # PIL
        mode = "L" if channels == 1 else "RGB"
        arrays = [np.asarray(im.convert(mode), dtype=np.float32) / 255 for im in images]
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(f"{name}: all images must have one size, got {[im.size for im in images]}")
        pixels = torch.from_numpy(np.stack([a.reshape(*a.shape[:2], -1) for a in arrays])).permute(0, 3, 1, 2)
    elif isinstance(image, np.ndarray) and image.dtype.kind in "uif":
        array = image.astype(np.float32) / 255 if image.dtype == np.uint8 else image.astype(np.float32)
        array = array[None] if array.ndim == 3 else array
        if array.ndim != 4:
            raise ValueError(f"{name}: an array must be HWC or NHWC, got shape {image.shape}")
        pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    elif isinstance(image, torch.Tensor) and image.is_floating_point() and image.ndim in (3, 4):
        pixels = (image[None] if image.ndim == 3 else image).detach().float().cpu()
    else:
        raise TypeError(f"{name} must be a PIL image, a list of them, an HWC/NHWC array or a float "
                        f"[N, C, H, W] tensor in [0, 1], got {type(image).__name__}")
    if gray and pixels.shape[1] != 1:
        pixels = pixels[:, :3].mean(1, keepdim=True)
    if pixels.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s) for this model, got {pixels.shape[1]}")
    if not torch.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        raise ValueError(f"{name} values must lie in [0, 1] (uint8 arrays are scaled by 1/255)")
    return pixels
