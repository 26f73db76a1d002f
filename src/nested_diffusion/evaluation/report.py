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

__all__ = ["write_results", "load_results", "plot_curves", "markdown_table", "anytime_score", "value_at", "COLUMNS",
           "nfe_efficiency", "efficiency_rows", "efficiency_table", "envelope_winners", "envelope_reference",
           "EFFICIENCY_TOLERANCE"]

#: a frame within this factor of the best exact-n run (plus the floor's noise) costs nothing: efficiency 1
EFFICIENCY_TOLERANCE = 1.2

COLUMNS = ("method", "kind", "nfe", "metric", "value", "num_samples")


def _atomic_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_results(result: Result, out_dir: str | os.PathLike, config: dict[str, Any],
                  lower_is_better: dict[str, bool], columns: int = 10,
                  efficiency: Sequence[dict[str, Any]] = ()) -> list[Path]:
    """Write every output of ``result`` into ``out_dir`` (with :func:`efficiency_rows`' rows, if any, as
    ``efficiency.csv``); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [",".join(COLUMNS)]
    for row in result.rows:
        lines.append(",".join(f"{row[c]!r}" if c == "value" else str(row[c]) for c in COLUMNS))
    written = [out / "results.csv", out / "results.json"]
    _atomic_text(written[0], "\n".join(lines) + "\n")
    _atomic_text(written[1], json.dumps({"config": config, "seconds": result.seconds, "rows": result.rows,
                                         "efficiency": list(efficiency)}, indent=1) + "\n")
    if efficiency:
        columns_e = ("method", "kind", "nfe", "metric", "value", "ratio", "efficiency")
        text = [",".join(columns_e)] + [",".join(repr(r[c]) if isinstance(r[c], float) else str(r[c])
                                                 for c in columns_e) for r in efficiency]
        written.append(out / "efficiency.csv")
        _atomic_text(written[-1], "\n".join(text) + "\n")
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


def markdown_table(result: Result, metric: str, fmt: str = "{:.3g}", nfes: Sequence[int] | None = None) -> str:
    """A Markdown table (methods × checkpoints) of one metric, for BENCHMARKS.md; ``nfes``: the columns
    (default: every NFE count with a value)."""
    nfes = sorted({r["nfe"] for r in result.rows if r["metric"] == metric}) if nfes is None else list(nfes)
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


# -- NFE efficiency (issue 19): what a frame is worth in compute -------------------------------------------------
def envelope_reference(result: Result) -> str | None:
    """The envelope a method is compared with: ``envelope-best`` (several envelopes), the only envelope, or
    ``None``."""
    names = list(dict.fromkeys(r["method"] for r in result.rows if r["kind"] == "envelope"))
    if "envelope-best" in names:
        return "envelope-best"
    return names[0] if len(names) == 1 else None


def _curve(result: Result, method: str, metric: str) -> dict[int, float]:
    return {r["nfe"]: r["value"] for r in result.rows if r["method"] == method and r["metric"] == metric}


def nfe_efficiency(result: Result, method: str, metric: str, nfe: int, reference: str = "envelope-best",
                   noise: float = 0.0, tolerance: float = EFFICIENCY_TOLERANCE) -> float:
    """What ``method``'s frame at ``nfe`` is worth in NFEs, as a fraction of ``nfe`` (lower-is-better metrics).

    1 where the frame is within ``tolerance``× (plus ``noise``, the floor's) of the reference's exact-``nfe``
    run; otherwise m/n for the smallest m at which the reference is at least as good as the frame (0.5: the
    frame is as good as a sampler given half the budget); 0 where the method has no frame yet. m is exact where
    the reference was measured at m - 1 and m (``EvalConfig.envelope_checkpoints``); between two measured
    counts further apart, the crossing is interpolated linearly in log(metric) against log(NFE) and rounded up.
    """
    frame = value_at(result, method, nfe, metric)
    curve = _curve(result, reference, metric)
    if nfe not in curve:
        raise ValueError(f"{reference!r} has no {metric!r} value at {nfe} NFEs: it must run at every checkpoint")
    if math.isinf(frame):
        return 0.0
    if frame <= tolerance * curve[nfe] + noise:
        return 1.0
    counts = sorted(m for m in curve if m <= nfe)
    previous = None
    for m in counts:
        if curve[m] <= frame:
            if previous is None or previous == m - 1 or curve[previous] <= 0 or curve[m] <= 0:
                return m / nfe
            # log-log interpolation between the last count worse than the frame and the first as good
            a, b = math.log(curve[previous]), math.log(curve[m])
            w = (a - math.log(frame)) / (a - b) if a != b else 1.0
            crossing = math.exp(math.log(previous) + w * (math.log(m) - math.log(previous)))
            return min(m, max(previous + 1, math.ceil(crossing - 1e-9))) / nfe
        previous = m
    return 1.0  # unreachable: the reference at nfe is better than the frame


def efficiency_rows(result: Result, metric: str, noise: float = 0.0, reference: str | None = None,
                    tolerance: float = EFFICIENCY_TOLERANCE) -> list[dict[str, Any]]:
    """``{method, nfe, metric, value, ratio, efficiency}`` for every nested and vanilla method at every
    checkpoint where the reference has a value (ratio: value / the reference's exact-N value)."""
    reference = reference or envelope_reference(result)
    if reference is None:
        return []
    ref = _curve(result, reference, metric)
    out = []
    for method in dict.fromkeys(r["method"] for r in result.rows if r["kind"] in ("nested", "vanilla")
                                and r["metric"] == metric):
        kind = next(r["kind"] for r in result.rows if r["method"] == method)
        for nfe in sorted(n for n in _curve(result, method, metric) if n in ref):
            value = value_at(result, method, nfe, metric)
            out.append({"method": method, "kind": kind, "nfe": nfe, "metric": metric, "value": value,
                        "ratio": value / ref[nfe] if ref[nfe] > 0 else math.inf,
                        "efficiency": nfe_efficiency(result, method, metric, nfe, reference, noise, tolerance)})
    return out


def efficiency_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: methods × checkpoints, each cell ``ratio / efficiency``."""
    if not rows:
        return ""
    nfes = sorted({r["nfe"] for r in rows})
    lines = ["| method | " + " | ".join(f"{n} NFE" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = {r["nfe"]: r for r in rows if r["method"] == method}
        lines.append(f"| {method} | " + " | ".join(
            f"{cells[n]['ratio']:.2f} / {cells[n]['efficiency']:.2f}" if n in cells else "–" for n in nfes) + " |")
    return "\n".join(lines)


def envelope_winners(result: Result, metric: str) -> str:
    """Markdown: at each NFE count, the best envelope member, its value and the runner-up's."""
    members = [m for m in dict.fromkeys(r["method"] for r in result.rows if r["kind"] == "envelope")
               if m != "envelope-best"]
    curves = {m: _curve(result, m, metric) for m in members}
    nfes = sorted({n for c in curves.values() for n in c})
    if len(members) < 2 or not nfes:
        return ""
    lines = ["| NFE | best exact-N run | value | runner-up | value |", "|---|---|---|---|---|"]
    for n in nfes:
        ranked = sorted((c[n], m) for m, c in curves.items() if n in c)
        (v1, m1), (v2, m2) = ranked[0], ranked[1] if len(ranked) > 1 else (math.nan, "–")
        lines.append(f"| {n} | {m1} | {v1:.4g} | {m2} | {v2:.4g} |")
    return "\n".join(lines)
