"""``nested-diffusion generate``: anytime frames, a contact sheet and a GIF for a model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_INNER_ETA, DEFAULT_INNER_SAMPLER, DEFAULT_OUTER_ETA, OUTER_UPDATES, PLAN_INNER_SAMPLER
from ..models import model_label
from .options import (SAMPLERS, CLIError, Formatter, add_model_arguments, classes, eta, guidance, load_pipeline,
                      positive_float, positive_int, staged_output, check_out)

MARKER = "run.json"
#: library argument names → this command's flags (for error messages)
FLAGS = {"outer_steps": "--outer", "inner_steps": "--inner", "budget": "--budget", "class_labels": "--class",
         "guidance_scale": "--guidance", "num_images": "--num-images", "height": "--height", "width": "--width",
         "inner_sampler": "--inner-sampler", "inner_eta": "--inner-eta", "outer_eta": "--outer-eta",
         "outer_update": "--outer-update", "true_cfg_scale": "--true-cfg-scale",
         "deadline": "--deadline", "prompt": "--prompt", "negative_prompt": "--negative-prompt"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="generate images, saving every anytime frame",
        description="Run nested diffusion and write every anytime frame as a PNG named by its NFE count, "
                    "a contact sheet (rows = samples, columns = frames) and an animated GIF. With no "
                    "arguments: the embedded MNIST digit model, one sample per digit, on the CPU.",
        formatter_class=Formatter)
    add_model_arguments(p, "hub id or local diffusers folder (default: the embedded MNIST digit model)")
    p.add_argument("--class", dest="classes", type=classes, default=None,
                   help="class indices, e.g. '3', '0,4,7' or '0-9' (default: every class of a class-conditional model)")
    p.add_argument("--prompt", default=None, help="text prompt (text-to-image models)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt (text-to-image models)")
    p.add_argument("--height", type=positive_int, default=None, help="image height in pixels (default: the model's)")
    p.add_argument("--width", type=positive_int, default=None, help="image width in pixels (default: the model's)")
    p.add_argument("--num-images", type=positive_int, default=None,
                   help="number of images; classes are cycled (default: one per class, or 1)")
    p.add_argument("--outer", type=positive_int, default=None,
                   help="outer steps K (default: planned from --budget and the model's noise schedule; 10 with "
                        "--inner)")
    p.add_argument("--inner", type=positive_int, default=None,
                   help="inner steps M per outer step (default: planned, growing: 100 NFEs → 10,10,10,20,25,25 "
                        "with renoised restarts at measured noise levels; 10 with --outer)")
    p.add_argument("--inner-sampler", choices=SAMPLERS, metavar="SAMPLER", default=None,
                   help=f"inner sampler: %(choices)s (default: {PLAN_INNER_SAMPLER} for a planned layout, "
                        f"{DEFAULT_INNER_SAMPLER} with --outer/--inner)")
    p.add_argument("--inner-eta", type=eta, default=None,
                   help=f"inner sampler η (default: the sampler's; {DEFAULT_INNER_ETA} for {DEFAULT_INNER_SAMPLER}, "
                        "measured; 1 for ddpm and dpmpp-2m-sde)")
    p.add_argument("--outer-update", choices=OUTER_UPDATES, default=None,
                   help="outer step: 'renoise' (the planned default: restart from the frame re-noised) or 'ddim' "
                        "(the paper's; the default with --outer/--inner)")
    p.add_argument("--outer-eta", type=eta, default=None,
                   help=f"η of the DDIM outer step (default: {DEFAULT_OUTER_ETA}, measured); needs --outer-update ddim "
                        "or an --outer/--inner layout")
    p.add_argument("--guidance", type=guidance, default=None,
                   help="classifier-free guidance scale, or the guidance embedding of Flux.1-dev (default: the "
                        "model's; 1 = no guidance)")
    p.add_argument("--true-cfg-scale", type=guidance, default=None,
                   help="Flux: true classifier-free guidance against --negative-prompt (> 1: a doubled batch per NFE)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", type=Path, default=Path("nested-diffusion-out"), help="output folder")
    p.add_argument("--budget", type=positive_int, default=None,
                   help="stop before exceeding this many NFEs (and plan --outer/--inner from it if not given)")
    p.add_argument("--deadline", type=positive_float, default=None,
                   help="wall-clock seconds for sampling; the last complete frame is kept")
    p.add_argument("--compare-vanilla", action="store_true",
                   help="also run the vanilla sampler (DDIM η=1; Euler on flow models) with the same NFEs and show "
                        "its x̂0 previews beside")
    p.add_argument("--check", action="store_true",
                   help="classify the final images with the shipped digit classifier (28×28 digit models)")
    p.add_argument("--replay", type=Path, default=None, metavar="LOG",
                   help="reproduce a studio session's frames from its log (GET /v1/sessions/ID/log); "
                        "writes OUT/<branch>/step-KK-nfe-XXX-I.png (uses --out, --device, --model and --dtype if given)")
    p.set_defaults(run=run, flags=FLAGS)


def run(args: argparse.Namespace) -> int:
    if args.replay is not None:
        from .replay import run as run_replay

        return run_replay(args)
    # 1. what the user asked for is checked (the layout with the model's noise schedule) before any network call
    check_out(args.out, MARKER, "nested-diffusion")
    import torch
    from tqdm import tqdm

    start = time.perf_counter()
    pipe = load_pipeline(args)
    load_s = time.perf_counter() - start
    labels = _labels(pipe.adapter, args.classes, args.num_images, args.prompt)
    num_images = args.num_images or (len(labels) if labels else 1)
    condition = dict(prompt=args.prompt, negative_prompt=args.negative_prompt, class_labels=labels,
                     guidance_scale=args.guidance, true_cfg_scale=args.true_cfg_scale, num_images=num_images,
                     height=args.height, width=args.width)
    session = pipe.anytime(outer_steps=args.outer, inner_steps=args.inner, budget=args.budget,
                           inner_sampler=args.inner_sampler, inner_eta=args.inner_eta, outer_eta=args.outer_eta,
                           outer_update=args.outer_update, generator=torch.Generator().manual_seed(args.seed),
                           **condition)
    if args.check and (labels is None or tuple(session.core.x.shape[1:]) != (1, 28, 28)):
        raise CLIError("--check needs a class-conditional 28×28 digit model (like the embedded one)")
    core = session.core
    listed = args.outer is None and args.inner is None  # a planned layout lists its inner counts
    outer = core.num_steps
    inner = core.inner_steps if listed or len(set(core.inner_steps)) > 1 else core.inner_steps[0]
    layout = f"{outer}x{'/'.join(map(str, inner)) if isinstance(inner, list) else inner}"

    from ..planner import vanilla_baseline

    # 2. the nested frames, then (optionally) the vanilla previews at the same NFEs
    planned = min(session.core.total_nfe, args.budget or session.core.total_nfe)
    bar = tqdm(total=planned * (2 if args.compare_vanilla else 1), unit="NFE", desc="nested", file=sys.stderr)
    nested, start = [], time.perf_counter()
    for frame in session.frames(max_nfe=args.budget, deadline=args.deadline):
        nested.append(frame)
        bar.update(frame.nfe - bar.n)
    nested_s = time.perf_counter() - start
    if not nested:
        bar.close()
        raise CLIError(f"no frame completed within --deadline {args.deadline} s "
                       f"(one outer step costs {session.core.cost_at(0)} NFEs); nothing written")
    checkpoints = [f.nfe for f in nested]
    lanes = {"nested": [(f.nfe, f.images) for f in nested]}
    vanilla = []
    if args.compare_vanilla:
        bar.set_description("vanilla")
        sampler, eta = vanilla_baseline(session.core.schedule)  # DDIM η 1 on VP models, Euler on flow models
        baseline = pipe.vanilla(num_inference_steps=session.core.total_nfe, sampler=sampler, eta=eta,
                                generator=torch.Generator().manual_seed(args.seed), output_type="latent",
                                **condition)
        done = bar.n
        for frame in baseline.frames(max_nfe=checkpoints[-1]):
            if frame.nfe in checkpoints:
                vanilla.append(frame)
            bar.update(done + frame.nfe - bar.n)
        lanes["vanilla"] = [(f.nfe, baseline.decode(f.latents, "pil")) for f in vanilla]
    bar.close()

    # 3. the files: frames, contact sheet, GIF and run.json, moved into place together
    from ..visualize import save_anytime

    with staged_output(args.out, MARKER, "nested-diffusion") as folder:
        names = getattr(pipe.adapter, "class_names", None)
        samples = [f"#{i}" + ("" if labels is None else f" ({names[labels[i]] if names else labels[i]})")
                   for i in range(num_images)]
        from ..samplers import sampler_name as registry_name

        sampler_name = registry_name(core.inner_sampler)
        title = f"nested {layout} ({sampler_name})" + (
            " vs vanilla x0-prediction previews" if vanilla else "")
        save_anytime(folder, lanes, sample_labels=samples, lane_labels={"vanilla": "vanilla x0-pred"}, title=title)
        summary: dict[str, Any] = {
            "nested-diffusion": __import__("nested_diffusion").__version__,
            "model": model_label(args.model), "device": str(pipe.adapter.device), "dtype": args.dtype,
            "outer_steps": outer, "inner_steps": inner, "inner_sampler": sampler_name,
            "outer_timesteps": core.outer_timesteps, "outer_update": core.outer_update,
            "inner_eta": _one_or_all([s.eta for s in core.inner_samplers]),
            "guidance_scale": session.core.model_kwargs.get("guidance_scale"), "seed": args.seed,
            "class_labels": labels, "prompt": args.prompt, "nfe": checkpoints,
            "seconds": {"load": round(load_s, 3), "nested": round(nested_s, 3)},
        }
        if args.check:
            summary["check"] = _check(labels, nested[-1], vanilla[-1] if vanilla else None)
        (folder / MARKER).write_text(json.dumps(summary, indent=2))

    # 4. what was written
    print(f"nested {layout}: {len(nested)} frames × {num_images} images "
          f"({checkpoints[-1]} NFEs, {nested_s:.1f} s) on {pipe.adapter.device}")
    if core.outer_update == "renoise":  # the planned default: say where each later inner run restarts
        print(f"  inner runs restart from the previous frame re-noised to t = "
              f"{', '.join(f'{t:g}' for t in core.outer_timesteps[1:])}")
    print(f"  {args.out / 'frames'}/  ({sum(1 for _ in (args.out / 'frames').rglob('*.png'))} PNGs named by NFE count)")
    print(f"  {args.out / 'contact_sheet.png'}")
    print(f"  {args.out / 'anytime.gif'}")
    for method, result in summary.get("check", {}).items():
        print(f"  check ({method}): {result['correct']}/{result['total']} final images classified as the "
              f"requested digit; predictions {result['predicted']}")
    return 0


def _one_or_all(values: list) -> Any:
    return values[0] if len(set(values)) == 1 else values


def _labels(adapter: Any, requested: list[int] | None, num_images: int | None, prompt: str | None) -> list[int] | None:
    """One label per image: ``--class`` cycled over ``--num-images``; by default every class of a
    class-conditional model with at most 16 classes (none for text or unconditional models)."""
    num_classes = getattr(adapter, "num_classes", None)
    if requested is not None and num_classes is None:
        raise CLIError("--class needs a class-conditional model; this model has no classes")
    if requested is None and num_classes is not None and prompt is None:
        if num_classes > 16:
            raise CLIError(f"this model has {num_classes} classes: choose some with --class")
        requested = list(range(num_classes))
    if requested is None:
        return None
    if any(c >= num_classes for c in requested):
        raise CLIError(f"--class indices must lie in [0, {num_classes - 1}] for this model, got {requested}")
    return [requested[i % len(requested)] for i in range(num_images or len(requested))]


def _check(labels: list[int], nested, vanilla) -> dict[str, Any]:
    from ..models import check_digits

    frames = {"nested": nested, "vanilla": vanilla}
    return {method: check_digits(frame.latents, labels) for method, frame in frames.items() if frame is not None}
