#!/usr/bin/env python
"""Search for a nested configuration whose anytime curve stays close to the envelope.

On the exact Gaussian-mixture oracle (three training schedules), every candidate's FD at each
checkpoint is divided by the envelope's (best of DDIM η ∈ {0, 1} and DPM-Solver++(2M) η ∈ {0, 1}
runs of exactly N steps); a candidate passes when the ratio is ≤ 1.5 at every checkpoint ≥ 20 NFEs.
It uses ``nested_diffusion.evaluation`` — the engine behind ``nested-diffusion evaluate`` — and its
shard cache, so reruns are instant.

    python benchmarks/envelope_search.py --num-samples 2000          # ~10 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nested_diffusion.evaluation import EvalConfig, evaluate, load_target, make_metric, parse_method

CANDIDATES = [
    "10x10", "20x5", "5x20",                                  # DDIM inner, η .85 (defaults)
    "10x10:dpmpp-2m", "20x5:dpmpp-2m", "5x20:dpmpp-2m", "4x25:dpmpp-2m",
    "5x20:dpmpp-2m:0.5", "5x20:dpmpp-2m:1", "5x20:dpmpp-2m:0.85:0.5",
    "8x20/16/14/12/10/10/9/9:dpmpp-2m",                       # inner steps shrinking with τ
    "6x25/20/17/15/12/11:dpmpp-2m",
    "7x10/10/12/14/16/18/20:dpmpp-2m",                        # … and growing
    "5x20:ddim:0.5",
]
ENVELOPE = ["ddim:0", "ddim:1", "dpmpp-2m:0", "dpmpp-2m:1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--schedules", nargs="+", default=["linear", "scaled_linear", "cosine"])
    p.add_argument("--candidates", nargs="+", default=CANDIDATES)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/envelope-search"))
    args = p.parse_args()
    checkpoints = (10, 20, 30, 50, 75, 100)
    config = EvalConfig(args.num_samples, checkpoints, batch_size=500)
    methods = [parse_method("nested", c) for c in args.candidates]
    methods += [parse_method("vanilla", "ddim:1", budget=100)] + [parse_method("envelope", e) for e in ENVELOPE]
    summary = {}
    for schedule in args.schedules:
        result = evaluate(load_target(f"gmm:{schedule}"), methods, [make_metric("gmm-fd")], config,
                          args.out / schedule, progress=True)
        env = {c: result.value("envelope-best", c, "gmm-fd") for c in checkpoints}
        van = {c: result.value("vanilla-ddim-eta1-100", c, "gmm-fd") for c in checkpoints}
        print(f"\n### {schedule}: FD / envelope at each checkpoint (envelope FD in the first row)\n")
        print("| method | " + " | ".join(f"{c}" for c in checkpoints) + " | worst ≥20 | final / vanilla |")
        print("|---|" + "---|" * (len(checkpoints) + 2))
        print("| envelope FD | " + " | ".join(f"{env[c]:.3f}" for c in checkpoints) + " | | |")
        for m in methods:
            if m.kind != "nested":
                continue
            ratios = {}
            for c in checkpoints:
                try:
                    ratios[c] = result.value(m.name, c, "gmm-fd") / env[c]
                except KeyError:
                    ratios[c] = float("nan")
            worst = max(ratios[c] for c in checkpoints if c >= 20)
            final = result.value(m.name, 100, "gmm-fd") / van[100]
            summary.setdefault(m.name, []).append((worst, final))
            print(f"| {m.name} | " + " | ".join(f"{ratios[c]:.2f}" for c in checkpoints)
                  + f" | {worst:.2f} | {final:.2f} |")
    print("\n### worst ratio (≥ 20 NFEs) / final vs vanilla, per schedule\n")
    print("| method | " + " | ".join(args.schedules) + " | passes (≤ 1.5 everywhere, final ≤ 1.1) |")
    print("|---|" + "---|" * (len(args.schedules) + 1))
    for name, cells in summary.items():
        ok = all(w <= 1.5 and f <= 1.1 for w, f in cells)
        print(f"| {name} | " + " | ".join(f"{w:.2f} / {f:.2f}" for w, f in cells) + f" | {'yes' if ok else 'no'} |")


if __name__ == "__main__":
    main()
