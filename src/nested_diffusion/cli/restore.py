"""``nested-diffusion restore``: anytime restoration (nested DDRM) of an image or of held-out digits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..defaults import RESTORATION_TASKS
from ..models import model_label
from .options import (CLIError, Formatter, add_model_arguments, add_task_arguments, check_out, load_pipeline,
                      nested_frames, positive_int, staged_output)

MARKER = "run.json"
#: the restore command's tasks: all but the oracle-only dense matrix
TASK_NAMES = [t for t in RESTORATION_TASKS if t != "dense"]
#: library argument names → this command's flags (for error messages)
FLAGS = {"mask": "--mask", "outer_steps": "--outer", "inner_steps": "--inner", "budget": "--budget", "sigma_y": "--sigma-y",
         "num_images": "--num-images", "blur_sigma": "--blur-sigma", "box": "--box", "image": "--input"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore", help="restore an image (inpainting, super-resolution, deblurring, denoising), anytime",
        description="Nested DDRM: after every outer step a measurement-consistent restoration, improving with "
                    "NFEs. Writes the ground truth (when known), the measurement, every frame as a PNG named by "
                    "its NFE count, a contact sheet (rows: truth, measurement, nested frames, DDRM previews), a "
                    "GIF and run.json with consistency residuals. With no --input: held-out MNIST digits, "
                    "measured with noise --sigma-y, restored by the embedded model, offline.",
        formatter_class=Formatter)
    add_model_arguments(p, "pixel-space hub id or local diffusers folder (default: the embedded MNIST digit model)")
    add_task_arguments(p, TASK_NAMES, required=True)
    p.add_argument("--input", type=Path, default=None,
                   help="the observed image (PNG): the small image for sr2/sr4, the blurred or noisy image, the "
                        "gray image; for inpainting the whole picture (the task's hidden pixels are ignored)")
    p.add_argument("--mask", type=Path, default=None,
                   help="inpaint-mask: a PNG of the model's size, black = missing, white = kept")
    p.add_argument("--digits", type=positive_int, default=None,
                   help="without --input: restore this many held-out MNIST digits, cycling through the classes "
                        "(default 10: one per digit)")
    p.add_argument("--num-images", type=positive_int, default=None,
                   help="restorations per measurement (different samples of the posterior; default 1)")
    p.add_argument("--budget", type=positive_int, default=None, help="NFE budget of the default layout (default 100)")
    p.add_argument("--outer", type=positive_int, default=None, help="outer steps (default: planned from --budget)")
    p.add_argument("--inner", type=positive_int, default=None, help="inner steps (default: planned from --budget)")
    p.add_argument("--compare-ddrm", action="store_true",
                   help="also run DDRM with the same NFEs and show its x̂0 previews beside")
    p.add_argument("--check", action="store_true",
                   help="classify the final restorations of held-out digits with the shipped digit classifier")
    p.add_argument("--seed", type=int, default=0, help="random seed (measurement noise, masks, sampling)")
    p.add_argument("--out", type=Path, default=Path("nested-diffusion-restore"), help="output folder")
    p.set_defaults(run=run, flags=FLAGS)


def run(args: argparse.Namespace) -> int:
    # 1. what the user asked for is checked before the model loads
    check_out(args.out, MARKER, "nested-diffusion restore")
    if args.input is not None and args.digits is not None:
        raise CLIError("give --input (an image to restore) or --digits (held-out digits), not both")
    if args.input is not None and not args.input.is_file():
        raise CLIError(f"--input {str(args.input)!r} is not a file")
    if args.check and args.input is not None:
        raise CLIError("--check needs held-out digits (their true labels): drop --input")
    if (args.mask is not None) != (args.task == "inpaint-mask"):
        raise CLIError("--mask goes with --task inpaint-mask (and that task needs one)")
    if args.mask is not None and not args.mask.is_file():
        raise CLIError(f"--mask {str(args.mask)!r} is not a file")
    from ..images import load_image

    for path, flag in ((args.input, "--input"), (args.mask, "--mask")):  # images are checked before the model loads
        if path is not None:
            load_image(path, name=flag)
    import torch

    from ..restoration import make_operator

    pipe = load_pipeline(args)
    item = tuple(pipe.adapter.latent_shape(1)[1:])
    operator = make_operator(args.task, item, box=args.box, blur_sigma=args.blur_sigma, seed=args.seed,
                             mask=None if args.mask is None else _mask(args.mask))
    truth, labels, image = _observation(args, item)
    measurement = None if truth is None else operator.measure(truth * 2 - 1, args.sigma_y,
                                                             torch.Generator().manual_seed(args.seed))
    per = args.num_images or 1
    if measurement is not None:  # K restorations of every measurement
        measurement = measurement.repeat_interleave(per, 0)
        truth, labels = truth.repeat_interleave(per, 0), [c for c in labels for _ in range(per)]
    session = pipe.restore(image, operator, args.sigma_y, measurement=measurement, num_images=per if image is not None else None,
                           outer_steps=args.outer, inner_steps=args.inner, budget=args.budget,
                           generator=torch.Generator().manual_seed(args.seed))
    y = session.core.problem.measurement

    # 2. the nested frames, then (optionally) DDRM's previews at the same NFEs
    nested, nested_s, bar = nested_frames(session, compare="ddrm" if args.compare_ddrm else None)
    checkpoints = [f.nfe for f in nested]
    lanes = {"nested": nested}
    if args.compare_ddrm:
        ddrm = pipe.restore(operator=operator, sigma_y=args.sigma_y, measurement=y, method="ddrm",
                            steps=checkpoints[-1], generator=torch.Generator().manual_seed(args.seed), output_type="latent")
        done = bar.n
        lanes["ddrm"] = []
        for frame in ddrm.frames():
            if frame.nfe in checkpoints:
                lanes["ddrm"].append(frame)
            bar.update(done + frame.nfe - bar.n)
    bar.close()

    # 3. the files: references, frames, contact sheet, GIF and run.json, moved into place together
    from ..pipelines.session import to_output
    from ..visualize import save_anytime

    def pil(x: torch.Tensor) -> list:
        return to_output(((x.float().cpu() + 1) / 2).clamp(0, 1), "pil")

    references = {"measurement": pil(operator.pinv(y, item))}
    if truth is not None:
        references = {"truth": to_output(truth, "pil"), **references}
    quality = {lane: [_quality(operator, f.latents, y, args.sigma_y, truth) for f in frames]
               for lane, frames in lanes.items()}
    samples = [f"#{i}" + ("" if not labels else f" ({labels[i]})") for i in range(len(y))]
    with staged_output(args.out, MARKER, "nested-diffusion restore") as folder:
        save_anytime(folder, {lane: [(f.nfe, pil(f.latents)) for f in frames] for lane, frames in lanes.items()},
                     sample_labels=samples, references=references, lane_labels={"ddrm": "DDRM x0-pred"},
                     title=f"{args.task} (sigma_y {args.sigma_y:g}): nested DDRM"
                           + (" vs DDRM x0-prediction previews" if args.compare_ddrm else ""))
        summary: dict[str, Any] = {
            "nested-diffusion": __import__("nested_diffusion").__version__,
            "model": model_label(args.model), "task": args.task, "operator": repr(operator),
            "sigma_y": args.sigma_y, "input": None if args.input is None else str(args.input),
            "digits": None if truth is None else len(truth) // per, "class_labels": labels or None,
            "outer_steps": session.core.num_steps, "inner_steps": session.core.inner_steps, "seed": args.seed, "nfe": checkpoints,
            "quality": {lane: {k: [q[k] for q in rows] for k in rows[0]} for lane, rows in quality.items()},
            "seconds": {"nested": round(nested_s, 3)},
        }
        if args.check:
            from ..models import check_digits

            summary["check"] = {lane: check_digits(frames[-1].latents, labels) for lane, frames in lanes.items()}
        (folder / MARKER).write_text(json.dumps(summary, indent=2))

    # 4. what was written
    first, last = quality["nested"][0], quality["nested"][-1]
    print(f"restore {args.task}: {len(nested)} frames × {len(y)} images ({checkpoints[-1]} NFEs, {nested_s:.1f} s)")
    for name, q in ((f"first frame ({checkpoints[0]} NFEs)", first), (f"final ({checkpoints[-1]} NFEs)", last)):
        print(f"  {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in q.items()))
    print(f"  {args.out / 'contact_sheet.png'}  ({sum(1 for _ in (args.out / 'frames').rglob('*.png'))} PNGs in "
          f"{args.out / 'frames'}/)")
    for lane, result in summary.get("check", {}).items():
        print(f"  check ({lane}): {result['correct']}/{result['total']} restorations classified as the true digit")
    return 0


def _observation(args: argparse.Namespace, item: tuple[int, ...]):
    """``(truth pixels in [0, 1] or None, true labels or None, the observed image or None)``."""
    import torch

    if args.input is not None:
        from ..images import load_image

        return None, None, load_image(args.input, name="--input", mode="L" if item[0] == 1 else "RGB")
    if item != (1, 28, 28):
        raise CLIError(f"this model makes {item} images: give --input (held-out digits are 1×28×28)")
    from ..data import load_mnist5k

    images, labels = load_mnist5k("test")
    count = 10 if args.digits is None else args.digits
    if count > len(images):
        raise CLIError(f"--digits must be at most {len(images)} (the held-out digits), got {count}")
    by_class = [(labels == c).nonzero()[0] for c in range(10)]
    order = [int(by_class[i % 10][i // 10]) for i in range(count)]  # cycling through the classes
    return torch.from_numpy(images[order]).float().div(255).unsqueeze(1), labels[order].tolist(), None


def _mask(path: Path):
    """A mask PNG as a boolean pixel grid: True (kept) where the image is brighter than mid-gray."""
    import numpy as np
    import torch

    from ..images import load_image

    return torch.from_numpy(np.asarray(load_image(path, name="--mask", mode="L")) >= 128)


def _quality(operator, x, y, sigma_y: float, truth) -> dict[str, float]:
    """Consistency ‖Hx̂ − y‖ (as the residual ratio E‖Hx̂ − y‖²/(m σ_y²) when σ_y > 0, else its RMS) and,
    with a known truth, the PSNR (dB, [0, 1] pixels)."""
    from ..restoration import residual_ratio

    x = x.float().cpu()
    out = {}
    if sigma_y > 0:
        out["residual_ratio"] = residual_ratio(operator, x, y.cpu(), sigma_y)
    else:
        out["residual_rms"] = float((operator(x) - y.cpu().float()).pow(2).mean().sqrt())
    if truth is not None:
        mse = (((x + 1) / 2).clamp(0, 1) - truth).pow(2).flatten(1).mean(1)
        out["psnr"] = float((-10 * mse.clamp_min(1e-10).log10()).mean())
    return out
