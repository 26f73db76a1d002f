#!/usr/bin/env python
"""Wall time of nested diffusion against vanilla DDIM with the same NFEs on the embedded digit model.

By default the nested side is the project default (``plan_layout`` for 100 NFEs on the model's
schedule); ``--outer K --inner M`` times a uniform K×M layout instead.

Runs alternate between methods (so machine load hits both alike) and the median of ``--repeats``
runs is reported. "no decoding": frames stay tensors. "frames to disk": nested decodes and writes
every frame (num_images PNGs per outer step); vanilla writes its final images, as a vanilla user
would.

    python benchmarks/speed_digits.py --num-images 10 --repeats 9
    python benchmarks/speed_digits.py --outer 10 --inner 10 --num-images 10 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nested_diffusion import NestedPipeline


def timed(pipe, method: str, args, write_to: Path | None) -> float:
    labels = torch.arange(args.num_images) % 10
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    if method == "nested":
        s = pipe.anytime(class_labels=labels, outer_steps=args.outer, inner_steps=args.inner, generator=gen,
                         output_type="pil" if write_to else "latent")  # no counts: the planned default
        for frame in s:
            if write_to:
                for i, im in enumerate(frame.images):
                    im.save(write_to / f"nested-{i:02d}-nfe-{frame.nfe:03d}.png")
    else:
        s = pipe.vanilla(class_labels=labels, num_inference_steps=args.nfe, generator=gen,
                         output_type="latent")
        frame = s.run()
        if write_to:
            for i, im in enumerate(s.decode(frame.latents, "pil")):
                im.save(write_to / f"vanilla-{i:02d}.png")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outer", type=int, default=None, help="uniform layout: outer steps (default: the planned layout)")
    p.add_argument("--inner", type=int, default=None, help="uniform layout: inner steps")
    p.add_argument("--num-images", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    pipe = NestedPipeline.from_pretrained(None, device=args.device)
    probe = pipe.anytime(class_labels=[0], outer_steps=args.outer, inner_steps=args.inner, output_type="latent")
    args.nfe = probe.core.total_nfe  # vanilla runs exactly as many network calls
    args.label = (f"nested {args.outer}×{args.inner}" if args.outer or args.inner else
                  f"nested default ({probe.core.num_steps} frames, {'/'.join(map(str, probe.core.inner_steps))})")
    timed(pipe, "vanilla", args, None)  # warm-up
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("no decoding", "frames to disk"):
            times = {"vanilla": [], "nested": []}
            for r in range(args.repeats):
                for method in (("vanilla", "nested") if r % 2 == 0 else ("nested", "vanilla")):
                    times[method].append(timed(pipe, method, args, Path(tmp) if mode != "no decoding" else None))
            results[mode] = {m: statistics.median(t) for m, t in times.items()}
    n = args.nfe
    print(f"\nEmbedded digit model, {args.num_images} images (guidance {pipe.adapter.default_guidance:g}: doubled batch), "
          f"{n} NFEs, {args.device}, {torch.get_num_threads()} threads, median of {args.repeats} runs\n")
    print(f"| mode | vanilla {n} steps (s) | {args.label} (s) | ratio nested/vanilla |")
    print("|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['vanilla']:.2f} | {r['nested']:.2f} | {r['nested'] / r['vanilla']:.3f} |")


if __name__ == "__main__":
    main()
