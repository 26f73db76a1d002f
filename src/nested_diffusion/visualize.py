"""Contact sheets and animated GIFs of anytime frames (Pillow only)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["contact_sheet", "save_gif"]

_BG, _FG = (255, 255, 255), (20, 20, 20)


def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _cell(image: Image.Image | None, size: tuple[int, int]) -> Image.Image:
    if image is None:
        return Image.new("RGB", size, (235, 235, 235))
    return image.convert("RGB").resize(size, Image.NEAREST if image.width < size[0] else Image.BICUBIC)


def contact_sheet(rows: Sequence[Sequence[Image.Image | None]], column_labels: Sequence[str],
                  row_labels: Sequence[str] | None = None, cell: int = 84, pad: int = 4,
                  title: str | None = None) -> Image.Image:
    """A grid: ``rows[i][j]`` is drawn in row i, column j (``None`` leaves a grey cell), with
    column labels on top (e.g. "10 NFE") and optional row labels on the left."""
    font = _font()
    draw0 = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_h = draw0.textbbox((0, 0), "Ag", font=font)[3] + 4
    label_w = 0 if not row_labels else max(draw0.textlength(s, font=font) for s in row_labels) + 2 * pad
    n_cols = max(len(r) for r in rows)
    top = text_h + (text_h if title else 0)
    width = int(label_w) + n_cols * (cell + pad) + pad
    height = top + len(rows) * (cell + pad) + pad
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 2), title, fill=_FG, font=font)
    x0 = int(label_w) + pad
    for j, label in enumerate(column_labels):
        w = draw.textlength(label, font=font)
        draw.text((x0 + j * (cell + pad) + (cell - w) / 2, top - text_h + 2), label, fill=_FG, font=font)
    for i, row in enumerate(rows):
        y = top + pad + i * (cell + pad)
        if row_labels:
            draw.text((pad, y + cell / 2 - text_h / 2), row_labels[i], fill=_FG, font=font)
        for j, image in enumerate(row):
            sheet.paste(_cell(image, (cell, cell)), (x0 + j * (cell + pad), y))
    return sheet


def save_gif(frames: Sequence[Image.Image], path: str | Path | BinaryIO, duration_ms: int = 400,
             hold_last_ms: int = 1500) -> None:
    """An animated GIF looping over ``frames`` (the last one held longer), to a path or a binary file."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    durations = [duration_ms] * (len(frames) - 1) + [hold_last_ms]
    first, *rest = [f.convert("P", palette=Image.ADAPTIVE) for f in frames]
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=durations, loop=0, optimize=False)
