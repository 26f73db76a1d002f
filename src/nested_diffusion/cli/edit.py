"""``nested-diffusion edit``: anytime image-to-image and inpainting of an input image."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..models import model_label
from .options import (CLIError, Formatter, add_model_arguments, check_out, classes, guidance, load_pipeline,
                      nested_frames, positive_int, staged_output)

MARKER = "run.json"
#: library argument names → this command's flags (for error messages)
FLAGS = {"image": "--input", "mask_image": "--mask", "strength": "--strength", "outer_steps": "--outer",
         "inner_steps": "--inner", "budget": "--budget", "class_labels": "--class", "guidance_scale": "--guidance",
         "true_cfg_scale": "--true-cfg-scale", "num_images": "--num-images", "prompt": "--prompt",
         "negative_prompt": "--negative-prompt", "height": "--height", "width": "--width"}


def strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edit", help="edit an image (image-to-image, inpainting), anytime",
        description="Anytime editing: every outer step a complete edit of --input that improves with NFEs. "
                    "Without --mask it is image-to-image (the input noised to --strength, then denoised); with "
                    "--mask (white = repaint) it is inpainting: the unmasked region is kept in every frame. Writes "
                    "every frame as a PNG named by its NFE count, a contact sheet (rows: input, the mask in red "
                    "over it, nested frames, vanilla x̂0 previews), a GIF and run.json. On the embedded digit model "
                    "(the default) inpainting is nested DDRM, exact for a mask.",
        formatter_class=Formatter)
    add_model_arguments(p, "hub id or local diffusers folder (default: the embedded MNIST digit model)")
    p.add_argument("--input", type=Path, required=True, help="the image to edit (PNG, JPEG or WebP)")
    p.add_argument("--mask", type=Path, default=None,
                   help="inpainting mask of the input's size (PNG, JPEG or WebP): white = repaint, black = keep")
    p.add_argument("--strength", type=strength, default=None,
                   help="how much to change, in (0, 1]: the fraction of the noise schedule re-run (default: 0.8 for "
                        "image-to-image, 1 for inpainting, as diffusers)")
    p.add_argument("--prompt", default=None, help="text prompt (text-to-image models)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (text-to-image models)")
    p.add_argument("--class", dest="classes", type=classes, default=None,
                   help="class index for class-conditional models, e.g. '3' (default: unconditional)")
    p.add_argument("--guidance", type=guidance, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--true-cfg-scale", type=guidance, default=None,
                   help="Flux: true classifier-free guidance against --negative-prompt")
    p.add_argument("--num-images", type=positive_int, default=None, help="edits of the input (default 1)")
    p.add_argument("--budget", type=positive_int, default=None, help="NFE budget of the planned layout (default 100)")
    p.add_argument("--outer", type=positive_int, default=None, help="outer steps (default: planned from --budget)")
    p.add_argument("--inner", type=positive_int, default=None, help="inner steps (default: planned from --budget)")
    p.add_argument("--compare-vanilla", action="store_true",
                   help="also run the vanilla edit with the same NFEs and show its x̂0 previews beside (DDRM's on "
                        "pixel models with --mask)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", type=Path, default=Path("nested-diffusion-edit"), help="output folder")
    p.set_defaults(run=run, flags=FLAGS)


def run(args: argparse.Namespace) -> int:
    from ..images import load_image

    # 1. what the user asked for is checked before the model loads: the output folder and the images
    check_out(args.out, MARKER, "nested-diffusion edit")
    image = load_image(args.input, name="--input")
    mask = None if args.mask is None else load_image(args.mask, name="--mask", mode="L")
    if mask is not None and mask.size != image.size:
        raise CLIError(f"--mask must have the input's size {image.size[0]}×{image.size[1]}, got "
                       f"{mask.size[0]}×{mask.size[1]}")
    import torch

    pipe = load_pipeline(args)
    adapter = pipe.adapter
    pixel = getattr(adapter, "pixel_space", False)
    image = image.convert("L" if pixel and adapter.channels == 1 else "RGB")
    labels = None if args.classes is None else [args.classes[i % len(args.classes)]
                                                for i in range(args.num_images or 1)]
    condition = dict(prompt=args.prompt, negative_prompt=args.negative_prompt, class_labels=labels,
                     guidance_scale=args.guidance, true_cfg_scale=args.true_cfg_scale, num_images=args.num_images)
    layout = dict(outer_steps=args.outer, inner_steps=args.inner, budget=args.budget)
    generator = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731
    ddrm = pixel and mask is not None  # pixel models inpaint with nested DDRM (exact for a mask)
    if ddrm:
        if args.strength not in (None, 1.0):
            raise CLIError("--strength: inpainting on a pixel-space model is nested DDRM, which starts from noise "
                           "(strength 1)")
        from ..restoration import Inpainting

        keep = torch.from_numpy(__import__("numpy").asarray(mask) < 128)[None]  # observed where black (kept)
        condition.pop("prompt"), condition.pop("negative_prompt"), condition.pop("true_cfg_scale")
        session = pipe.restore(image, Inpainting(keep), 0.0, generator=generator(), output_type="latent",
                               **{k: v for k, v in condition.items() if k != "num_images"},
                               num_images=args.num_images, **layout)
    else:
        session = pipe.anytime(image=image, mask_image=mask, strength=args.strength, generator=generator(),
                               output_type="latent", **condition, **layout)

    # 2. the nested frames, then (optionally) the vanilla edit's previews at the same NFEs
    total = session.core.total_nfe
    nested, nested_s, bar = nested_frames(session, compare="vanilla" if args.compare_vanilla else None)
    checkpoints = [f.nfe for f in nested]
    lanes = {"nested": nested}
    if args.compare_vanilla:
        if ddrm:
            baseline = pipe.restore(image, session.core.problem.operator, 0.0, method="ddrm", steps=total,
                                    generator=generator(), output_type="latent",
                                    class_labels=labels, guidance_scale=args.guidance, num_images=args.num_images)
        else:
            from ..pipelines.editing import edit_timesteps
            from ..planner import vanilla_baseline

            sampler, eta = vanilla_baseline(session.core.schedule)
            _, steps = edit_timesteps(adapter, session.core.schedule, total, session.edit.strength)
            baseline = pipe.vanilla(image=image, mask_image=mask, strength=session.edit.strength,
                                    num_inference_steps=steps, sampler=sampler, eta=eta, generator=generator(),
                                    output_type="latent", **condition)
        done = bar.n
        lanes["vanilla"] = [f for f in baseline.frames(max_nfe=checkpoints[-1]) if
                            (bar.update(done + f.nfe - bar.n) or True) and f.nfe in checkpoints]
    bar.close()

    # 3. the files: the input and mask rows, frames, contact sheet, GIF and run.json, moved into place together
    from ..visualize import mask_overlay, save_anytime

    decode = lambda frames: [(f.nfe, session.decode(f.latents, "pil")) for f in frames]  # noqa: E731
    count = len(nested[-1].latents)
    references = {"input": [image] * count}
    if mask is not None:
        references["masked"] = [mask_overlay(image, mask)] * count  # the region to repaint in red over the input
    kind = "inpainting" if mask is not None else f"image-to-image (strength {session.edit.strength:g})" \
        if session.edit is not None else "image-to-image"
    method = "nested DDRM" if ddrm else "nested"
    with staged_output(args.out, MARKER, "nested-diffusion edit") as folder:
        save_anytime(folder, {lane: decode(frames) for lane, frames in lanes.items()},
                     sample_labels=[f"#{i}" for i in range(count)], references=references,
                     lane_labels={"vanilla": "DDRM x0-pred" if ddrm else "vanilla x0-pred"},
                     title=f"{kind}: {method}" + (" vs x0-prediction previews" if args.compare_vanilla else ""))
        summary: dict[str, Any] = {
            "nested-diffusion": __import__("nested_diffusion").__version__,
            "model": model_label(args.model), "input": str(args.input),
            "mask": None if args.mask is None else str(args.mask), "method": method,
            "strength": None if session.edit is None else session.edit.strength,
            "prompt": args.prompt, "class_labels": labels, "seed": args.seed, "nfe": checkpoints,
            "outer_timesteps": [float(t) for t in session.core.outer_timesteps],
            "inner_steps": session.core.inner_steps, "seconds": {"nested": round(nested_s, 3)},
        }
        (folder / MARKER).write_text(json.dumps(summary, indent=2))

    # 4. what was written
    print(f"edit ({kind}, {method}): {len(nested)} frames × {count} images ({checkpoints[-1]} NFEs, {nested_s:.1f} s)")
    print(f"  {args.out / 'contact_sheet.png'}  ({sum(1 for _ in (args.out / 'frames').rglob('*.png'))} PNGs in "
          f"{args.out / 'frames'}/)")
    print(f"  {args.out / 'anytime.gif'}")
    return 0
