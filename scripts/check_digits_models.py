#!/usr/bin/env python
"""Sample quality of digit model folders (DDPM or rectified flow), without the nested core.

A stopgap check for the flow digit model (``assets/digits-flow``) until ``nested-diffusion
evaluate`` runs flow schedules: each model folder is sampled by diffusers' own scheduler loop —
Euler on the velocity with its ``FlowMatchEulerDiscreteScheduler`` for a flow model, DDIM
(η = 0, trailing spacing, its ``clip_sample`` with the ε implied by the clipped x̂0 — the library's
rule, ``use_clipped_model_output=True`` in diffusers) for a DDPM model: both are the deterministic
first-order solver of the probability-flow ODE, so equal steps cost equal NFEs. Classifier-free
guidance runs as one doubled batch (label, null class 10): v̂ = v_∅ + w·(v_y − v_∅).

Scores, per model × guidance × steps, over ``--num-samples`` samples with labels cycling 0…9 and
the same initial noise for every model: the shipped digit classifier's accuracy on the requested
labels and digit-FD (Fréchet distance of its 128-d features to the 500 held-out digits).

    python scripts/check_digits_models.py --model src/nested_diffusion/assets/digits-flow \\
        src/nested_diffusion/assets/digits --steps 50 --guidance 1 1.5 --num-samples 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from nested_diffusion.data import load_mnist5k
from nested_diffusion.metrics import frechet_distance, gaussian_stats
from nested_diffusion.models import load_classifier

NULL_CLASS = 10


def load(folder: Path):
    from diffusers import DDIMScheduler, DiffusionPipeline, FlowMatchEulerDiscreteScheduler

    pipe = DiffusionPipeline.from_pretrained(str(folder))
    unet = pipe.unet.eval().requires_grad_(False)
    if isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler):
        return unet, pipe.scheduler, "flow"
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing", set_alpha_to_one=True)
    return unet, scheduler, "ddim"


@torch.no_grad()
def sample(unet, scheduler, kind: str, noise: torch.Tensor, labels: torch.Tensor, guidance: float,
           steps: int, shift: float | None = None, clip_x0: bool = False) -> torch.Tensor:
    """Run the scheduler's loop from ``noise`` (flow: Euler on v; ddim: DDIM η = 0); returns x0 in [-1, 1].

    ``clip_x0`` (flow): clip x̂0 = x − σ·v to [-1, 1] and step with the velocity it implies,
    v = (x − x̂0) / σ — what ``clip_sample`` does for the DDIM model."""
    if shift is not None:
        scheduler = type(scheduler).from_config(scheduler.config, shift=shift)
    scheduler.set_timesteps(steps)
    x = noise.clone()
    for t in scheduler.timesteps:
        if guidance == 1.0:
            out = unet(x, t.expand(len(x)), class_labels=labels).sample
        else:
            both = unet(torch.cat([x, x]), t.expand(2 * len(x)),
                        class_labels=torch.cat([labels, torch.full_like(labels, NULL_CLASS)])).sample
            cond, uncond = both.chunk(2)
            out = uncond + guidance * (cond - uncond)
        if clip_x0 and kind == "flow":
            sigma = float(t) / scheduler.config.num_train_timesteps
            out = (x - (x - sigma * out).clamp(-1, 1)) / sigma
        ddim = {"eta": 0.0, "use_clipped_model_output": True} if kind == "ddim" else {}
        x = scheduler.step(out, t, x, **ddim).prev_sample
    return x.clamp(-1, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, nargs="+", required=True, help="diffusers folders (DDPMPipeline layout)")
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--steps", type=int, nargs="+", default=[50], help="sampler steps = NFEs (default: 50)")
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5])
    p.add_argument("--shift", type=float, nargs="+", default=None,
                   help="flow models only: sample with these shifts instead of the folder's")
    p.add_argument("--clip-x0", action="store_true", help="flow models: clip x̂0 to [-1, 1] at every step")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args()
    if args.num_samples <= 0 or args.batch_size <= 0 or min(args.steps) <= 0:
        p.error("--num-samples, --batch-size and --steps must be positive")

    classifier = load_classifier()
    test_images, _ = load_mnist5k("test")
    with torch.no_grad():
        reference = classifier.features(torch.from_numpy(test_images).float().div(127.5).sub(1).unsqueeze(1))
    ref_stats = gaussian_stats(reference)
    labels = torch.arange(args.num_samples) % 10
    noise = torch.randn(args.num_samples, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))

    rows = []
    print("| model | sampler | shift | guidance | NFEs | accuracy | digit-FD | s/sample |\n" + "|---" * 8 + "|")
    for folder in args.model:
        unet, scheduler, kind = load(folder)
        name = "/".join(folder.parts[-2:])
        shifts = args.shift if (args.shift and kind == "flow") else [None]
        for shift in shifts:
            for guidance in args.guidance:
                for steps in args.steps:
                    t0 = time.perf_counter()
                    images = torch.cat([
                        sample(unet, scheduler, kind, noise[i:i + args.batch_size], labels[i:i + args.batch_size],
                               guidance, steps, shift, args.clip_x0)
                        for i in tqdm(range(0, args.num_samples, args.batch_size), desc=f"{name} w={guidance}",
                                      leave=False)])
                    seconds = time.perf_counter() - t0
                    with torch.no_grad():
                        features = classifier.features(images)
                        predicted = classifier.head(features).argmax(1)
                    flow_sampler = "euler+clip" if args.clip_x0 else "euler"
                    row = dict(model=str(folder), sampler=flow_sampler if kind == "flow" else "ddim-eta0",
                               shift=shift if shift is not None else scheduler.config.get("shift"),
                               guidance=guidance, nfe=steps, num_samples=args.num_samples,
                               accuracy=float((predicted == labels).float().mean()),
                               digit_fd=frechet_distance(*gaussian_stats(features), *ref_stats),
                               seconds_per_sample=seconds / args.num_samples)
                    rows.append(row)
                    tqdm.write(f"| {name} | {row['sampler']} | {row['shift'] or '-'} | {guidance:g} | {steps} | "
                               f"{row['accuracy'] * 100:.1f}% | {row['digit_fd']:.3f} | "
                               f"{row['seconds_per_sample']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
