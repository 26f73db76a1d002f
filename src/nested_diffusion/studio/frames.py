"""Encoding frames for download: PNG with provenance in text chunks, and the anytime GIF."""

from __future__ import annotations

import io
import json
from typing import Any, Sequence

from PIL import Image
from PIL.PngImagePlugin import PngInfo

__all__ = ["png_bytes", "gif_bytes", "read_png_text", "frame_text"]


def png_bytes(image: Image.Image, text: dict[str, Any]) -> bytes:
    """``image`` as PNG; every entry of ``text`` becomes a tEXt/iTXt chunk (non-strings as JSON)."""
    info = PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value if isinstance(value, str) else json.dumps(value))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_text(data: bytes) -> dict[str, str]:
    """The text chunks of a PNG (for tests and tools)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return dict(im.text)


def gif_bytes(images: Sequence[Image.Image], min_side: int = 128) -> bytes:
    """The frames as a looping GIF (:func:`~nested_diffusion.visualize.save_gif`), enlarged by an
    integer factor (nearest neighbour) so that small images stay visible."""
    from ..visualize import save_gif

    if not images:
        raise ValueError("a GIF needs at least one frame")
    scale = max(1, -(-min_side // min(images[0].size)))
    frames = [im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale > 1 else im for im in images]
    buffer = io.BytesIO()
    save_gif(frames, buffer)
    return buffer.getvalue()


def frame_text(*, model: str, session: str, branch: str, kind: str, seed: int, session_seed: int, step: int,
               num_steps: int, nfe: int, timestep: int, image: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The provenance a frame's PNG carries in its text chunks (the studio's and the replay's)."""
    from .. import __version__

    rev = max((h.get("rev", 0) for h in history), default=0)
    return {"Software": f"nested-diffusion {__version__} studio", "model": model, "session": session,
            "branch": branch, "kind": kind, "seed": str(seed), "session_seed": str(session_seed), "step": str(step),
            "num_steps": str(num_steps), "nfe": str(nfe), "timestep": str(timestep), "image": str(image),
            "condition_rev": str(rev), "condition_history": history}
