"""Writing an evaluation: ``results.csv``, ``results.json``, ``quality_vs_nfe.png`` and sample
grids ``grids/<method>/nfe<N>.png`` (one column per class for class-conditional models)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._files import replacing
from .runner import Result

__all__ = ["write_results", "load_results", "plot_curves", "markdown_table", "anytime_score", "value_at", "COLUMNS"]

COLUMNS = ("method", "kind", "nfe", "metric", "value", "num_samples")


def _atomic_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_results(result: Result, out_dir: str | os.PathLike, config: dict[str, Any],
                  lower_is_better: dict[str, bool], columns: int = 10) -> list[Path]:
    """Write every output of ``result`` into ``out_dir``; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [",".join(COLUMNS)]
    for row in result.rows:
        lines.append(",".join(f"{row[c]!r}" if c == "value" else str(row[c]) for c in COLUMNS))
    written = [out / "results.csv", out / "results.json"]
    _atomic_text(written[0], "\n".join(lines) + "\n")
    _atomic_text(written[1], json.dumps({"config": config, "seconds": result.seconds, "rows": result.rows},
                                        indent=1) + "\n")
    plot = plot_curves(result, out / "quality_vs_nfe.png", lower_is_better, title=str(config.get("model", "")))
    if plot is not None:
        written.append(plot)
    for method, grids in result.grids.items():
        for nfe, images in grids.items():
            written.append(_save_grid(images, out / "grids" / method / f"nfe{nfe:04d}.png", columns))
    return written


def load_results(path: str | os.PathLike) -> Result:
    """A :class:`Result` (rows and seconds, no grids) from a ``results.json`` or its folder."""
    path = Path(path)
    data = json.loads((path / "results.json" if path.is_dir() else path).read_text())
    return Result(rows=data["rows"], seconds=data.get("seconds", {}))


def _save_grid(images: np.ndarray, path: Path, columns: int) -> Path:
    from PIL import Image

    n, c, h, w = images.shape
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = im.transpose(1, 2, 0)
    image = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    scale = max(1, 128 // max(h, w))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with replacing(path, ".png") as tmp:
        image.save(tmp)
    return path


def plot_curves(result: Result, path: Path, lower_is_better: dict[str, bool], title: str = "") -> Path | None:
    """One panel per metric, one line per method: quality against cumulative NFEs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency; keep the CSV even without it
        return None
    metrics = list(dict.fromkeys(r["metric"] for r in result.rows))
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    style = {"nested": dict(linestyle="-", marker="o"), "vanilla": dict(linestyle="--", marker="x"),
             "envelope": dict(linestyle=":", marker="s")}
    for ax, metric in zip(axes[0], metrics):
        for method in dict.fromkeys(r["method"] for r in result.rows):
            points = sorted((r["nfe"], r["value"]) for r in result.rows if r["method"] == method and r["metric"] == metric)
            if not points:
                continue
            kind = next(r["kind"] for r in result.rows if r["method"] == method)
            extra = dict(color="black", linewidth=2) if method == "envelope-best" else {}
            ax.plot(*zip(*points), label=method, markersize=4, **style[kind], **extra)
        values = [r["value"] for r in result.rows if r["metric"] == metric]
        if lower_is_better.get(metric, True) and values and min(values) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("NFEs (network evaluations)")
        ax.set_ylabel(f"{metric} ({'lower' if lower_is_better.get(metric, True) else 'higher'} is better)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"anytime quality: {title}" if title else "anytime quality")
    fig.tight_layout()
    try:
        with replacing(path, ".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def markdown_table(result: Result, metric: str, fmt: str = "{:.3g}") -> str:
    """A Markdown table (methods × checkpoints) of one metric, for BENCHMARKS.md."""
    nfes = sorted({r["nfe"] for r in result.rows if r["metric"] == metric})
    lines = ["| method | " + " | ".join(f"{n} NFE" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for method in dict.fromkeys(r["method"] for r in result.rows if r["metric"] == metric):
        cells = {r["nfe"]: r["value"] for r in result.rows if r["method"] == method and r["metric"] == metric}
        lines.append(f"| {method} | " + " | ".join(fmt.format(cells[n]) if n in cells else "–" for n in nfes) + " |")
    return "\n".join(lines)


def value_at(result: Result, method: str, nfe: int, metric: str) -> float:
    """The metric of ``method`` at checkpoint ``nfe``; ``inf`` where it has no frame yet."""
    try:
        return result.value(method, nfe, metric)
    except KeyError:
        return math.inf


def anytime_score(result: Result, method: str, metric: str, reference: str = "envelope-best",
                  checkpoints: Sequence[int] | None = None) -> float:
    """Geometric mean over ``checkpoints`` (default: all of the reference's) of ``method``'s value
    divided by ``reference``'s — 1 means "as good as a sampler that knew the budget"; ``inf`` when
    the method has no frame at some checkpoint. For lower-is-better metrics."""
    if checkpoints is None:
        checkpoints = sorted({r["nfe"] for r in result.rows if r["method"] == reference and r["metric"] == metric})
    if not checkpoints:
        raise ValueError(f"no {metric!r} values of {reference!r} in this result")
    logs = [math.log(value_at(result, method, c, metric) / result.value(reference, c, metric)) for c in checkpoints]
    return math.exp(sum(logs) / len(logs))
