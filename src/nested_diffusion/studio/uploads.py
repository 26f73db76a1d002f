"""Uploaded images: decoded once by the library's safe loader (:func:`nested_diffusion.images.load_image`:
PNG / JPEG / WebP only, the pixel count read from the header before anything is decoded), named by their
content, kept in a bounded store for sessions to use.

An image's id is the SHA-256 of its mode, size and pixels (:func:`image_id`), so the same picture has one
id however it was encoded, a log can carry an image inline and prove it is the one its session used
(:func:`from_png`), and knowing an id means knowing the image already.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["StoredImage", "Uploads", "image_id", "stored", "from_png", "ID_PATTERN", "UPLOAD_TYPES"]

#: an image id: 64 lowercase hex digits
ID_PATTERN = r"^[0-9a-f]{64}$"
#: the media types ``POST /v1/images`` takes (the file's own format decides among them)
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp")


def image_id(image: Any) -> str:
    """SHA-256 of an image's mode, size and pixels (hex)."""
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class StoredImage:
    """A decoded image (mode ``L`` or ``RGB``) and its :func:`image_id`."""

    id: str
    image: Any

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, as PIL has it."""
        return self.image.size

    @property
    def pixels(self) -> int:
        return self.image.width * self.image.height

    def png(self) -> bytes:
        """The pixels as PNG (lossless: decoding it gives this image, and its id, back)."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()

    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png()).decode("ascii")

    def describe(self) -> dict[str, Any]:
        return {"image_id": self.id, "width": self.image.width, "height": self.image.height, "mode": self.image.mode}


def stored(image: Any) -> StoredImage:
    """``image`` as a :class:`StoredImage`: gray modes become ``L``, everything else ``RGB`` (alpha dropped)."""
    gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
    image = image.convert("L" if gray else "RGB") if image.mode not in ("L", "RGB") else image
    return StoredImage(image_id(image), image)


def from_png(expected: str, data: str, *, max_pixels: int) -> StoredImage:
    """An image a log carries inline (``data:image/png;base64,…``), decoded by the safe loader and checked to
    be the image ``expected`` names (``ValueError`` otherwise)."""
    from ..images import load_image

    prefix = "data:image/png;base64,"
    if not isinstance(data, str) or not data.startswith(prefix):
        raise ValueError(f"log image {expected[:12]}… must be a {prefix}… string")
    try:
        raw = base64.b64decode(data[len(prefix):], validate=True)
    except ValueError:
        raise ValueError(f"log image {expected[:12]}… is not valid base64") from None
    image = stored(load_image(raw, name=f"log image {expected[:12]}…", max_pixels=max_pixels))
    if image.id != expected:
        raise ValueError(f"log image {expected[:12]}… does not match its id (its pixels hash to {image.id[:12]}…)")
    return image


class Uploads:
    """The server's uploaded images, least recently used first out: at most ``max_images`` of them and
    ``max_pixels`` pixels in all (the newest is always kept). Thread-safe."""

    def __init__(self, max_images: int, max_pixels: int) -> None:
        self.max_images, self.max_pixels = max_images, max_pixels
        self._images: collections.OrderedDict[str, StoredImage] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._images)

    def add(self, data: bytes, *, max_pixels: int) -> StoredImage:
        """Decode an uploaded file (raises :class:`~nested_diffusion.images.ImageFormatError` naming what is
        wrong) and keep it."""
        from ..images import load_image

        image = stored(load_image(bytes(data), name="the upload", max_pixels=max_pixels))
        with self._lock:
            self._images.pop(image.id, None)
            self._images[image.id] = image
            total = sum(i.pixels for i in self._images.values())
            while len(self._images) > 1 and (len(self._images) > self.max_images or total > self.max_pixels):
                _, old = self._images.popitem(last=False)
                total -= old.pixels
        return image

    def get(self, id: str) -> StoredImage | None:
        with self._lock:
            image = self._images.get(id)
            if image is not None:
                self._images.move_to_end(id)
            return image
