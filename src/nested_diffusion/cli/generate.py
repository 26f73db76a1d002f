"""``nested-diffusion generate``: anytime frames, a contact sheet and a GIF for a model."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..defaults import DEFAULT_BUDGET, DEFAULT_INNER_ETA, DEFAULT_INNER_SAMPLER, DEFAULT_OUTER_ETA

SAMPLERS = ("ddim", "ddpm", "dpmpp-2m", "dpmpp-2m-sde")
DTYPES = ("float32", "float16", "bfloat16")
MARKER = "run.json"


def _number(kind: type, accepted: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: parse ``kind`` and accept it when ``ok(value)``; else say ``accepted``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text}")
        return value
    return parse


_positive_int = _number(int, "a positive integer", lambda v: v > 0)
_positive_float = _number(float, "a positive number", lambda v: v > 0 and math.isfinite(v))
_eta = _number(float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
_guidance = _number(float, "a number >= 0", lambda v: v >= 0 and math.isfinite(v))


def _classes(text: str) -> list[int]:
    """'3', '0,4,7' or '0-9' (ranges inclusive)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ValueError
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class indices like '3', '0,4,7' or '0-9', got {text!r}") from None
    if any(c < 0 for c in out):
        raise argparse.ArgumentTypeError(f"class indices must be >= 0, got {text!r}")
    return out


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except ``None`` ones (their help text says what ``None`` means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="generate images, saving every anytime frame",
        description="Run nested diffusion and write every anytime frame as a PNG named by its NFE count, "
                    "a contact sheet (rows = samples, columns = frames) and an animated GIF. With no "
                    "arguments: the embedded MNIST digit model, one sample per digit, on the CPU.",
        formatter_class=_Formatter)
    p.add_argument("--model", default=None,
                   help="hub id or local diffusers folder (default: the embedded MNIST digit model)")
    p.add_argument("--class", dest="classes", type=_classes, default=None,
                   help="class indices, e.g. '3', '0,4,7' or '0-9' (default: every class of a class-conditional model)")
    p.add_argument("--prompt", default=None, help="text prompt (text-to-image models)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (text-to-image models)")
    p.add_argument("--height", type=_positive_int, default=None, help="image height in pixels (default: the model's)")
    p.add_argument("--width", type=_positive_int, default=None, help="image width in pixels (default: the model's)")
    p.add_argument("--num-images", type=_positive_int, default=None,
                   help="number of images; classes are cycled (default: one per class, or 1)")
    p.add_argument("--outer", type=_positive_int, default=None,
                   help="outer steps K (default: planned from --budget; 10 with --inner)")
    p.add_argument("--inner", type=_positive_int, default=None,
                   help="inner steps M per outer step (default: planned from --budget, growing: 100 NFEs → "
                        "10,10,10,20,25,25; 10 with --outer)")
    p.add_argument("--inner-sampler", choices=SAMPLERS, default=DEFAULT_INNER_SAMPLER, help="inner sampler")
    p.add_argument("--inner-eta", type=_eta, default=None, help=f"inner sampler η (default: {DEFAULT_INNER_ETA}, measured; 1 for ddpm and dpmpp-2m-sde)")
    p.add_argument("--outer-eta", type=_eta, default=None, help=f"outer DDIM η (default: {DEFAULT_OUTER_ETA}, measured)")
    p.add_argument("--guidance", type=_guidance, default=None,
                   help="classifier-free guidance scale (default: the model's; 1 = no guidance)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", type=Path, default=Path("nested-diffusion-out"), help="output folder")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps …")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype")
    p.add_argument("--budget", type=_positive_int, default=None,
                   help="stop before exceeding this many NFEs (and plan --outer/--inner from it if not given)")
    p.add_argument("--deadline", type=_positive_float, default=None,
                   help="wall-clock seconds for sampling; the last complete frame is kept")
    p.add_argument("--compare-vanilla", action="store_true",
                   help="also run vanilla DDIM (η=1) with the same NFEs and show its x̂0 previews beside")
    p.add_argument("--check", action="store_true",
                   help="classify the final images with the shipped digit classifier (28×28 digit models)")
    p.set_defaults(run=run)


def check_out(out: Path, marker: str, writer: str) -> Path:
    """Refuse output paths a command must not touch: files, non-empty folders without its
    ``marker`` (written by ``writer``), missing or read-only parents. Returns the parent."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise ValueError(f"--out {str(out)!r} is a non-empty folder not written by {writer}; "
                         "choose a new or empty folder")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"--out {str(out)!r}: parent folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {str(out)!r}: parent folder {str(parent)!r} is not writable")
    return parent


def _prepare_out(out: Path) -> Path:
    """Refuse output paths we must not touch; return the temporary folder to build in."""
    parent = check_out(out, MARKER, "nested-diffusion")
    return parent / f".{out.name}.partial-{os.getpid()}"


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: CUDA is not available on this machine")
    return device


def run(args: argparse.Namespace) -> int:
    tmp = _prepare_out(args.out)
    if args.budget is not None and args.outer is not None and args.inner is not None and args.budget < args.inner:
        raise ValueError(f"--budget {args.budget} is smaller than one outer step ({args.inner} NFEs)")

    import torch
    from tqdm import tqdm

    from ..pipelines import NestedPipeline
    from ..planner import plan_layout

    device = _device(args.device)
    dtype = getattr(torch, args.dtype)
    t_load = time.perf_counter()
    pipe = NestedPipeline.from_pretrained(args.model, torch_dtype=dtype, device=device)
    load_s = time.perf_counter() - t_load
    adapter = pipe.adapter

    # conditions
    num_classes = getattr(adapter, "num_classes", None)
    classes = args.classes
    if classes is not None and num_classes is None:
        raise ValueError("--class needs a class-conditional model; this model has no classes")
    if classes is None and num_classes is not None and args.prompt is None:
        if num_classes > 16:
            raise ValueError(f"this model has {num_classes} classes: choose some with --class")
        classes = list(range(num_classes))
    if classes is not None and any(c >= num_classes for c in classes):
        raise ValueError(f"--class indices must lie in [0, {num_classes - 1}] for this model, got {classes}")
    num_images = args.num_images or (len(classes) if classes else 1)
    labels = None if classes is None else [classes[i % len(classes)] for i in range(num_images)]

    # steps
    outer, inner = args.outer, args.inner
    layout = dict(inner_sampler=args.inner_sampler, inner_eta=args.inner_eta, outer_eta=args.outer_eta)
    if outer is None and inner is None:  # the measured default layout for the budget and this model's schedule
        planned_layout = plan_layout(args.budget or DEFAULT_BUDGET, adapter.alphas_cumprod).session_kwargs()
        inner = planned_layout["inner_steps"]
        outer = len(inner)
        if args.inner_sampler == planned_layout["inner_sampler"]:  # explicit --inner-eta/--outer-eta still apply
            layout = {**planned_layout, **{k: v for k, v in layout.items() if v is not None}}
    elif args.budget is not None and (outer is None or inner is None):
        outer = outer or max(1, args.budget // inner)
        inner = inner or max(1, args.budget // outer)
    outer, inner = outer or 10, inner or 10

    condition = dict(prompt=args.prompt, negative_prompt=args.negative_prompt, class_labels=labels,
                     guidance_scale=args.guidance, num_images=num_images, height=args.height, width=args.width)
    layout.update(outer_steps=outer, inner_steps=inner)
    nested = pipe.anytime(**layout, generator=torch.Generator().manual_seed(args.seed), **condition)
    planned = min(nested.core.total_nfe, args.budget or nested.core.total_nfe)
    bar = tqdm(total=planned * (2 if args.compare_vanilla else 1), unit="NFE", desc="nested", file=sys.stderr)
    nested_frames = []
    t0 = time.perf_counter()
    for frame in nested.frames(max_nfe=args.budget, deadline=args.deadline):
        nested_frames.append(frame)
        bar.update(frame.nfe - bar.n)
    nested_s = time.perf_counter() - t0
    if not nested_frames:
        bar.close()
        raise ValueError(f"no frame completed within --deadline {args.deadline} s "
                         f"(one outer step costs {nested.core.cost_at(0)} NFEs); nothing written")
    checkpoints = [f.nfe for f in nested_frames]

    vanilla_frames = []
    if args.compare_vanilla:
        bar.set_description("vanilla")
        vanilla = pipe.vanilla(num_inference_steps=nested.core.total_nfe, sampler="ddim", eta=1.0,
                               generator=torch.Generator().manual_seed(args.seed), output_type="latent", **condition)
        done = bar.n
        for frame in vanilla.frames(max_nfe=checkpoints[-1]):
            if frame.nfe in checkpoints:
                vanilla_frames.append(frame)
            bar.update(done + frame.nfe - bar.n)
        vanilla_frames = [(f, vanilla.decode(f.latents, "pil")) for f in vanilla_frames]
    bar.close()

    # write everything into a temporary folder, then move it into place
    from ..visualize import contact_sheet, save_gif

    try:
        tmp.mkdir()
        rows, row_labels, gif_frames = [], [], []
        names = getattr(adapter, "class_names", None)
        for i in range(num_images):
            folder = tmp / "frames" / f"sample-{i:02d}"
            folder.mkdir(parents=True)
            for f in nested_frames:
                f.images[i].save(folder / f"nested-nfe-{f.nfe:03d}.png")
            for f, images in vanilla_frames:
                images[i].save(folder / f"vanilla-nfe-{f.nfe:03d}.png")
            what = "" if labels is None else f" ({names[labels[i]] if names else labels[i]})"
            rows.append([f.images[i] for f in nested_frames])
            row_labels.append(f"#{i}{what} nested")
            if vanilla_frames:
                rows.append([images[i] for _, images in vanilla_frames])
                row_labels.append(f"#{i} vanilla x0-pred")
        col_labels = [f"{n} NFE" for n in checkpoints]
        title = f"nested {outer}x{inner} ({args.inner_sampler})" + (" vs vanilla DDIM x0-prediction previews" if vanilla_frames else "")
        contact_sheet(rows, col_labels, row_labels, title=title).save(tmp / "contact_sheet.png")
        for k, f in enumerate(nested_frames):
            strip = [[im for im in f.images]]
            strip_labels = ["nested"]
            if vanilla_frames:
                strip.append(list(vanilla_frames[k][1]))
                strip_labels.append("vanilla x0-pred")
            gif_frames.append(contact_sheet(strip, [""] * num_images, strip_labels, cell=56,
                                            title=f"{f.nfe} NFE"))
        save_gif(gif_frames, tmp / "anytime.gif")
        summary: dict[str, Any] = {
            "nested-diffusion": __import__("nested_diffusion").__version__,
            "model": args.model or "embedded:digits", "device": str(device), "dtype": args.dtype,
            "outer_steps": outer, "inner_steps": inner, "inner_sampler": args.inner_sampler,
            "outer_timesteps": nested.core.outer_timesteps, "outer_update": nested.core.outer_update,
            "guidance_scale": nested.core.model_kwargs.get("guidance_scale"), "seed": args.seed,
            "class_labels": labels, "prompt": args.prompt, "nfe": checkpoints,
            "seconds": {"load": round(load_s, 3), "nested": round(nested_s, 3)},
        }
        if args.check:
            summary["check"] = _check(nested_frames[-1], vanilla_frames[-1][0] if vanilla_frames else None, labels)
        (tmp / MARKER).write_text(json.dumps(summary, indent=2))
        if args.out.exists():
            shutil.rmtree(args.out)
        tmp.rename(args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    n_files = sum(1 for _ in (args.out / "frames").rglob("*.png"))
    print(f"nested {outer}×{inner}: {len(nested_frames)} frames × {num_images} images "
          f"({checkpoints[-1]} NFEs, {nested_s:.1f} s) on {device}")
    print(f"  {args.out / 'frames'}/  ({n_files} PNGs named by NFE count)")
    print(f"  {args.out / 'contact_sheet.png'}")
    print(f"  {args.out / 'anytime.gif'}")
    if args.check:
        for method, result in summary["check"].items():
            print(f"  check ({method}): {result['correct']}/{result['total']} final images classified as the "
                  f"requested digit; predictions {result['predicted']}")
    return 0


def _check(nested_frame, vanilla_frame, labels) -> dict[str, Any]:
    import torch

    from ..models import load_classifier

    if labels is None:
        raise ValueError("--check needs class labels (a class-conditional digit model)")
    classifier = load_classifier()
    out = {}
    for method, frame in (("nested", nested_frame), ("vanilla", vanilla_frame)):
        if frame is None:
            continue
        x = frame.latents.float().cpu().clamp(-1, 1)
        if x.shape[1:] != (1, 28, 28):
            raise ValueError(f"--check needs 1×28×28 digit images, got {tuple(x.shape[1:])}")
        with torch.inference_mode():
            pred = classifier(x).argmax(1).tolist()
        out[method] = {"predicted": pred, "correct": sum(p == c for p, c in zip(pred, labels)), "total": len(labels)}
    return out
