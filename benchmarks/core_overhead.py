#!/usr/bin/env python
"""The core's own cost per NFE: nested and vanilla sessions over a network that costs nothing.

The "network" returns zeros of a small batch, so the time measured is the session machinery — grids, levels,
the denoiser conversion, the sampler steps, NFE counting and the commit of each step. With ``--against
PATH`` (a source tree of another version, e.g. a git worktree at an older commit) both versions run in
separate interpreters, alternating, so machine load hits them alike; the table reports medians of
``--repeats`` runs of ``--nfe`` NFEs each, in µs per NFE.

    python benchmarks/core_overhead.py --against /path/to/old/src --repeats 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from nested_diffusion import nested_sample, vanilla_sample, plan_layout
from nested_diffusion.schedules import make_alphas_cumprod
ac = make_alphas_cumprod("linear")
model = lambda x, t, **kw: torch.zeros_like(x)
noise = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))
nfe, out = int(sys.argv[1]), {}
for name in ("nested-planned", "nested-10x10-ddim", "vanilla-dpmpp-2m"):
    t0 = time.perf_counter()
    total = 0
    while total < nfe:
        if name == "nested-planned":
            s = nested_sample(model, ac, noise, generator=torch.Generator().manual_seed(1),
                              **plan_layout(100, ac).session_kwargs())
        elif name == "nested-10x10-ddim":
            s = nested_sample(model, ac, noise, outer_steps=10, inner_steps=10, generator=torch.Generator().manual_seed(1))
        else:
            s = vanilla_sample(model, ac, noise, steps=100, sampler="dpmpp-2m", eta=0.0)
        total += s.run().nfe
    out[name] = (time.perf_counter() - t0) / total * 1e6
print(json.dumps(out))
"""


def run(src: str, nfe: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(nfe)], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", default=None, help="another version's source tree (its src/ folder)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--nfe", type=int, default=3000, help="NFEs per method and run (default 3000)")
    args = p.parse_args()
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    trees = {"this": here} if args.against is None else {"this": here, "other": args.against}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    from tqdm import tqdm

    for _ in tqdm(range(args.repeats), desc="repeats"):
        for label, src in trees.items():  # alternating
            runs[label].append(run(src, args.nfe))
    names = list(runs["this"][0])
    print(f"\nµs per NFE of the core (a free network, batch 4 × 64, one thread), median of {args.repeats} runs "
          f"of {args.nfe} NFEs\n")
    print("| method | " + " | ".join(trees) + (" | this / other |" if len(trees) > 1 else " |"))
    print("|---|" + "---|" * (len(trees) + (len(trees) > 1)))
    for name in names:
        med = {k: statistics.median(r[name] for r in v) for k, v in runs.items()}
        ratio = f" | {med['this'] / med['other']:.2f}" if len(trees) > 1 else ""
        print(f"| {name} | " + " | ".join(f"{med[k]:.1f}" for k in trees) + ratio + " |")


if __name__ == "__main__":
    main()
