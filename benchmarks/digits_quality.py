#!/usr/bin/env python
"""Quality of the embedded digit model, measured with the shipped digit classifier.

For N samples (classes balanced, same seeds for every method) it reports, at each anytime
checkpoint, the fraction classified as the requested digit and the Fréchet distance in the
classifier's 128-d feature space to the held-out MNIST-5k test split ("digit-FD"), for vanilla
DDIM (η = 1, 100 steps, x̂0 previews) and nested 10×10 (defaults), with and without guidance.
It also writes a sample grid (one row per digit) for looking at the samples.

    python benchmarks/digits_quality.py --num-samples 300 --guidance default 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nested_diffusion import NestedPipeline
from nested_diffusion.data import load_mnist5k
from nested_diffusion.metrics import frechet_distance, gaussian_stats
from nested_diffusion.models import load_classifier

CHECKPOINTS = (10, 20, 30, 50, 70, 100)


def evaluate(make_session, labels, classifier, real_stats, desc, chunk) -> tuple[dict[int, tuple[float, float]], torch.Tensor]:
    """{nfe: (accuracy, digit-FD)} over all samples, run in chunks of ``chunk`` images (small
    batches are faster per image on a CPU); also returns the final images."""
    preds, feats, finals = {}, {}, []
    bar = tqdm(total=len(labels), desc=desc, unit="img")
    for lo in range(0, len(labels), chunk):
        session = make_session(labels[lo:lo + chunk], lo)
        for frame in session:
            x = frame.latents.float().clamp(-1, 1)
            with torch.inference_mode():
                preds.setdefault(frame.nfe, []).append(classifier(x).argmax(1))
                feats.setdefault(frame.nfe, []).append(classifier.features(x))
        finals.append(session.last_frame.latents)
        bar.update(len(labels[lo:lo + chunk]))
    bar.close()
    curve = {n: ((torch.cat(preds[n]) == labels).float().mean().item(),
                 frechet_distance(*gaussian_stats(torch.cat(feats[n])), *real_stats)) for n in preds}
    return curve, torch.cat(finals)


def at(curve, n):
    return curve[max(k for k in curve if k <= n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: embedded)")
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--guidance", nargs="+", default=["default", "1"], help="guidance scales ('default' = the model's)")
    p.add_argument("--methods", nargs="+", default=["vanilla", "nested"], choices=["vanilla", "nested"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=100, help="images per batch")
    p.add_argument("--grid", type=Path, default=Path("docs/samples.png"), help="sample grid (nested, default guidance)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    pipe = NestedPipeline.from_pretrained(args.model, device=args.device)
    classifier = load_classifier().to(args.device)
    xte, _ = load_mnist5k("test")
    with torch.inference_mode():
        real = classifier.features(torch.from_numpy(xte).float().div(127.5).sub(1).unsqueeze(1).to(args.device))
    real_stats = gaussian_stats(real)
    labels = torch.arange(args.num_samples) % 10
    print(f"model: {args.model or 'embedded'}; {args.num_samples} samples; digit-FD reference: "
          f"{len(xte)} held-out test digits (FD of 300 real train digits to it: "
          f"{real_train_fd(classifier, real_stats, args.device):.2f})\n")
    rows = []
    for g in args.guidance:
        scale = pipe.adapter.default_guidance if g == "default" else float(g)
        for method in args.methods:
            def make_session(y, offset, method=method, scale=scale):
                gen = torch.Generator().manual_seed(args.seed + offset)
                common = dict(class_labels=y, guidance_scale=scale, output_type="latent", generator=gen)
                if method == "nested":
                    return pipe.anytime(outer_steps=10, inner_steps=10, **common)
                return pipe.vanilla(num_inference_steps=100, sampler="ddim", eta=1.0, **common)

            t0 = time.perf_counter()
            curve, finals = evaluate(make_session, labels.to(args.device), classifier, real_stats,
                                     f"{method} w={scale}", args.chunk)
            rows.append((method, scale, curve, time.perf_counter() - t0))
            if method == "nested" and g == "default" and args.grid:
                save_grid(finals, labels, args.grid)
    print("| method | guidance | " + " | ".join(f"acc @{n}" for n in CHECKPOINTS) + " | digit-FD @10 | digit-FD @100 |")
    print("|---|---|" + "---|" * (len(CHECKPOINTS) + 2))
    for method, scale, curve, secs in rows:
        name = "nested 10×10" if method == "nested" else "vanilla DDIM η=1 (x̂0 previews)"
        print(f"| {name} | {scale:g} | " + " | ".join(f"{at(curve, n)[0] * 100:.1f}%" for n in CHECKPOINTS)
              + f" | {at(curve, 10)[1]:.2f} | {at(curve, 100)[1]:.2f} |")


def real_train_fd(classifier, real_stats, device) -> float:
    x, _ = load_mnist5k("train")
    x = torch.from_numpy(x[np.random.default_rng(0).choice(len(x), 300, replace=False)]).float().div(127.5).sub(1)
    with torch.inference_mode():
        return frechet_distance(*gaussian_stats(classifier.features(x.unsqueeze(1).to(device))), *real_stats)


def save_grid(latents, labels, path: Path, per_class: int = 12) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    x = ((latents.float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()[:, 0]
    rows = []
    for c in range(10):
        picks = x[labels == c][:per_class]
        rows.append(torch.cat(list(picks), dim=1))
    Image.fromarray(torch.cat(rows, dim=0).numpy(), mode="L").resize(
        (28 * per_class * 2, 28 * 10 * 2), Image.NEAREST).save(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
