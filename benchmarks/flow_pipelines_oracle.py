#!/usr/bin/env python
"""The planned default inside real diffusers flow pipelines, scored exactly: Flux.1-dev and SD3 (CFG) tiny
pipelines whose transformer is the exact velocity of the 8×8-digit mixture on 16×2×2 latents
(:class:`nested_diffusion.testing.pipelines.ExactVelocityTransformer`). For every checkpoint N: the nested
default's frame, the pipeline's own N-step run (`pipe(...)`, its Euler sampler on its own σ grid: Flux's
dynamic μ, SD3's shift 3) and the x̂0 previews of a 100-step Euler run; FD to the mixture.

    python benchmarks/flow_pipelines_oracle.py --num-samples 2000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tiny pipeline builders

from nested_diffusion import NestedPipeline  # noqa: E402
from nested_diffusion.testing import GaussianMixture  # noqa: E402
from nested_diffusion.testing.pipelines import ExactVelocityTransformer  # noqa: E402


def main() -> None:
    from tqdm import tqdm
    from tiny_pipelines import build_flux, build_sd3

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--budget", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(1)
    gmm = GaussianMixture.from_digits()
    n, size = args.num_samples, dict(height=16, width=16)
    fd = lambda x: gmm.frechet_distance(x.reshape(len(x), -1).double())  # noqa: E731
    for family in ("flux-dev", "sd3-cfg"):
        folder = Path(tempfile.mkdtemp())
        if family == "flux-dev":
            pipe, kwargs = build_flux(folder, guidance_embeds=True), dict(guidance_scale=3.5)
            pipe.transformer = ExactVelocityTransformer(pipe.transformer, gmm, pipe)
        else:
            pipe, kwargs = build_sd3(folder), dict(guidance_scale=3.0, negative_prompt="blurry")
            pipe.transformer = ExactVelocityTransformer(pipe.transformer, gmm)
        nested = NestedPipeline.from_pipe(pipe)
        common = dict(prompt="a photo", num_images=n, output_type="latent", **size, **kwargs)
        g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
        frames = {f.nfe: fd(f.latents) for f in nested.anytime(budget=args.budget, generator=g(), **common)}
        previews = {f.nfe: fd(f.latents) for f in nested.vanilla(num_inference_steps=args.budget, sampler="ddim",
                                                                 eta=0.0, generator=g(), **common)}
        runs = {}
        for steps in tqdm(sorted(frames), desc=f"{family}: pipeline runs"):
            out = pipe(["a photo"], num_images_per_prompt=n, num_inference_steps=steps, generator=g(),
                       output_type="latent", **size, **kwargs).images
            runs[steps] = fd(pipe._unpack_latents(out, 16, 16, pipe.vae_scale_factor) if family == "flux-dev" else out)
        print(f"\n{family}, budget {args.budget}, {n} samples: FD to the mixture\n")
        print("| method | " + " | ".join(f"{c} NFE" for c in sorted(frames)) + " |\n|---|" + "---|" * len(frames))
        print("| nested (planned default) | " + " | ".join(f"{frames[c]:.4g}" for c in sorted(frames)) + " |")
        print("| pipeline, exactly N steps | " + " | ".join(f"{runs[c]:.4g}" for c in sorted(frames)) + " |")
        print("| Euler x̂0 previews (100 steps) | " + " | ".join(f"{previews[c]:.4g}" for c in sorted(frames)) + " |")
        print("| nested / pipeline | " + " | ".join(f"{frames[c] / runs[c]:.2f}" for c in sorted(frames)) + " |")
        print("| previews / nested | " + " | ".join(f"{previews[c] / frames[c]:.1f}" for c in sorted(frames)) + " |")


if __name__ == "__main__":
    main()
