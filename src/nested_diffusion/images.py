"""Loading user images safely — the one loader of ``edit``, ``restore --input`` and the studio's uploads.

Only PNG, JPEG and WebP are accepted, and the pixel count is checked from the header *before* anything is
decoded (Pillow's decompression-bomb guard is turned into an error too), so a huge or hostile file costs
nothing; a non-image, a truncated file or another format is a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

__all__ = ["load_image", "ImageFormatError", "FORMATS", "MAX_PIXELS"]

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
