"""Contact sheets, animated GIFs and whole anytime runs written to a folder (Pillow only)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["contact_sheet", "save_gif", "save_anytime"]

#: A lane of an anytime run: ``(nfe, one image per sample)`` per frame.
Lane = Sequence[tuple[int, Sequence[Image.Image]]]

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
    """A grid: ``rows[i][j]`` is drawn in row i, column j (``None`` leaves a grey cell; a short row
    leaves the rest blank), with column labels on top (e.g. "10 NFE") and optional row labels on
    the left."""
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


def mask_overlay(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The image with the region to repaint (white in ``mask``) shown in red at half opacity, so a mask reads
    on a white contact sheet and beside its input."""
    rgb = image.convert("RGB")
    red = Image.new("RGB", rgb.size, (220, 40, 40))
    alpha = mask.convert("L").resize(rgb.size, Image.NEAREST).point(lambda v: 128 if v >= 128 else 0)
    return Image.composite(red, rgb, alpha)


def save_gif(frames: Sequence[Image.Image], path: str | Path | BinaryIO, duration_ms: int = 400,
             hold_last_ms: int = 1500) -> None:
    """An animated GIF looping over ``frames`` (the last one held longer), to a path or a binary file."""
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    durations = [duration_ms] * (len(frames) - 1) + [hold_last_ms]
    first, *rest = [f.convert("P", palette=Image.ADAPTIVE) for f in frames]
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=durations, loop=0, optimize=False)


def save_anytime(folder: str | Path, lanes: Mapping[str, Lane], *, sample_labels: Sequence[str],
                 lane_labels: Mapping[str, str] | None = None, references: Mapping[str, Sequence[Image.Image]] | None = None,
                 title: str | None = None) -> list[Path]:
    """Write an anytime run into ``folder`` and return the files written.

    * ``frames/sample-NN/<lane>-nfe-XXX.png``: every frame of every lane (e.g. ``nested``,
      ``vanilla``), named by its cumulative NFE count; ``frames/sample-NN/<name>.png`` for each of
      ``references`` (one image per sample, e.g. a ground truth and a measurement);
    * ``contact_sheet.png``: per sample, a row per reference (one image) and a row per lane, columns
      at the first lane's NFE counts (other lanes' frames at the same NFEs beside them);
    * ``anytime.gif``: one frame per step of the first lane, every lane's images side by side.
    """
    folder, references = Path(folder), dict(references or {})
    labels = {name: (lane_labels or {}).get(name, name) for name in lanes}
    first = next(iter(lanes.values()))
    checkpoints = [nfe for nfe, _ in first]
    at = {name: dict(lane) for name, lane in lanes.items()}  # nfe -> images
    written: list[Path] = []
    rows, row_labels = [], []
    for i, sample in enumerate(sample_labels):
        sample_dir = folder / "frames" / f"sample-{i:02d}"
        sample_dir.mkdir(parents=True, exist_ok=True)
        for name, images in references.items():
            written.append(sample_dir / f"{name}.png")
            images[i].save(written[-1])
            rows.append([images[i]])
            row_labels.append(f"{sample} {name}")
        for name, lane in lanes.items():
            for nfe, images in lane:
                written.append(sample_dir / f"{name}-nfe-{nfe:03d}.png")
                images[i].save(written[-1])
            rows.append([at[name][n][i] if n in at[name] else None for n in checkpoints])
            row_labels.append(f"{sample} {labels[name]}")
    written.append(folder / "contact_sheet.png")
    contact_sheet(rows, [f"{n} NFE" for n in checkpoints], row_labels, title=title).save(written[-1])
    strips = []
    for n in checkpoints:
        strip = [list(images) for images in references.values()]
        strip += [list(at[name][n]) if n in at[name] else [None] * len(sample_labels) for name in lanes]
        strips.append(contact_sheet(strip, [""] * len(sample_labels), list(references) + list(labels.values()),
                                    cell=56, title=f"{n} NFE"))
    written.append(folder / "anytime.gif")
    save_gif(strips, written[-1])
    return written
