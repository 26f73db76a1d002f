#!/usr/bin/env python
"""The design search of issue 12: nested layouts against the envelope on the exact oracle.

Every candidate is a ``nested-diffusion evaluate`` method spec (so any row can be rerun by hand);
runs go through the evaluation engine with its shard cache, one folder per schedule and budget,
shared with ``gmm_quality.py --table big`` when the sample counts agree. A cell is the worst FD /
envelope-best over the checkpoints >= 20 % of the budget (envelope-best: the best of DDIM η 0/1 and
DPM-Solver++(2M) η 0/1 runs of exactly N steps), then the final FD / vanilla DDIM η = 1's final.

    python benchmarks/envelope_search.py --num-samples 10000 --budget 100   # ~25 CPU-min
    python benchmarks/envelope_search.py --num-samples 10000 --budget 50

Candidates whose outer grid is given in noise levels (``σ:…``) are mapped to each schedule's
timesteps with :func:`nested_diffusion.planner.outer_timesteps_at_sigmas`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from nested_diffusion.evaluation import (EvalConfig, default_checkpoints, evaluate, load_target, make_metric,
                                         parse_method, value_at)
from nested_diffusion.planner import outer_timesteps_at_sigmas, plan_schedule

ENVELOPE = ["ddim:0", "ddim:1", "dpmpp-2m:0", "dpmpp-2m:1"]
RULE = "1.4/0.42/0.42/0.4/0.14"  # the first search's noise levels
RULE_B = "0.7/0.42/0.42/0.4/0.14"  # σ_2 halved: the cosine schedule's 20-NFE frame


def candidates(budget: int) -> dict[str, str]:
    """label -> spec; ``σ:a/b/…`` stands for the outer grid [T-1, t(a), t(b), …] of each schedule,
    ``L`` for the default frame layout's inner counts (plan_schedule: 100 → 10/10/10/20/25/25)."""
    inner = plan_schedule(budget)
    L = f"{len(inner)}x{'/'.join(map(str, inner))}"
    first = "0/" + "/".join(["0.85"] * (len(inner) - 1))
    return {
        "paper 10×10 DDIM η .85, uniform, DDIM outer": f"{budget // 10}x10",
        "old default: L, DPM++ η .85, uniform, DDIM outer": f"{L}:dpmpp-2m",
        "L, DPM++ η .85, σ grid, DDIM outer": f"{L}:dpmpp-2m@σ:{RULE}",
        "L, DPM++ η 1, σ grid, DDIM outer": f"{L}:dpmpp-2m:1@σ:{RULE}",
        "L, DPM++ η .85, uniform, renoise": f"{L}:dpmpp-2m:0.85:renoise",
        "L, DPM++ η 0 (ODE), σ grid, renoise": f"{L}:dpmpp-2m:0:renoise@σ:{RULE}",
        "L, DPM++ η .85, σ grid, renoise (default at 50)": f"{L}:dpmpp-2m:0.85:renoise@σ:{RULE}",
        "L, DPM++ η .5, σ grid, renoise": f"{L}:dpmpp-2m:0.5:renoise@σ:{RULE}",
        "L, DPM++ η 0 then .85, σ grid, renoise (first choice)": f"{L}:dpmpp-2m:{first}:renoise@σ:{RULE}",
        "L, DPM++ η 0 then 1, σ grid, renoise": f"{L}:dpmpp-2m:{first.replace('0.85', '1')}:renoise@σ:{RULE}",
        "L, DPM++ η 1, σ grid, renoise": f"{L}:dpmpp-2m:1:renoise@σ:{RULE}",
        "L, DPM++(3M) η 0 then .85, σ grid, renoise": f"{L}:dpmpp-3m:{first}:renoise@σ:{RULE}",
        "L, η 0 then .85, σ grid ×2, renoise": f"{L}:dpmpp-2m:{first}:renoise@σ:2.8/0.84/0.84/0.8/0.28",
        "L, η 0 then .85, σ grid ×0.5, renoise": f"{L}:dpmpp-2m:{first}:renoise@σ:0.7/0.21/0.21/0.2/0.07",
        "L, η 0 then .85, log-SNR-uniform grid, renoise": f"{L}:dpmpp-2m:{first}:renoise@λ",
        "L, DPM++ η .85, σ grid B, renoise (default at 100)": f"{L}:dpmpp-2m:0.85:renoise@σ:{RULE_B}",
        "L, DPM++ η .85, σ grid B, DDIM outer": f"{L}:dpmpp-2m@σ:{RULE_B}",
        "L, DPM++ η 1, σ grid B, renoise": f"{L}:dpmpp-2m:1:renoise@σ:{RULE_B}",
        "L, DPM++ η .85, σ grid ×2, renoise (default at 20)": f"{L}:dpmpp-2m:0.85:renoise@σ:2.8/0.84/0.84/0.8/0.28",
        "L, DPM++ η .85, σ grid ×3, renoise": f"{L}:dpmpp-2m:0.85:renoise@σ:4.2/1.26/1.26/1.2/0.42",
    }


def resolve(spec: str, schedule, outer_steps: int) -> str:
    """Turn ``@σ:…`` (noise levels) and ``@λ`` (outer grid uniform in log-SNR) into timesteps (VP tables)."""
    if "@" not in spec:
        return spec
    head, grid = spec.split("@")
    a = schedule.alphas_cumprod.double()
    if grid == "λ":  # outer_steps timesteps uniform in λ = log(α/σ) between T-1 and 0
        lam = (0.5 * (a / (1 - a)).log()).tolist()
        taus = []
        for k in range(outer_steps):
            target = lam[-1] + (lam[0] - lam[-1]) * k / outer_steps
            t = min(range(len(lam)), key=lambda i: abs(lam[i] - target))
            taus.append(min(t, taus[-1] - 1) if taus else len(lam) - 1)
    else:
        taus = outer_timesteps_at_sigmas(schedule, [float(s) for s in grid[2:].split("/")])
    return f"{head}@{'/'.join(map(str, taus))}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=10000)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--schedules", nargs="+", default=["linear", "scaled_linear", "cosine"])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gmm"))
    args = p.parse_args()
    checkpoints = default_checkpoints(args.budget)
    config = EvalConfig(args.num_samples, checkpoints, batch_size=1000 if args.num_samples >= 10000 else 500)
    table = {}
    for schedule in args.schedules:
        target = load_target(f"gmm:{schedule}")
        cands = candidates(args.budget)
        outer_steps = len(plan_schedule(args.budget))
        specs = {label: resolve(spec, target.schedule, outer_steps) for label, spec in cands.items()}
        methods = [parse_method("nested", s) for s in specs.values()]
        methods += [parse_method("vanilla", "ddim:1", budget=args.budget)]
        methods += [parse_method("envelope", e) for e in ENVELOPE]
        out = args.out / f"n{args.num_samples}-{schedule}-{args.budget}"
        result = evaluate(target, methods, [make_metric("gmm-fd")], config, out, progress=True)
        final = checkpoints[-1]
        vanilla = value_at(result, f"vanilla-ddim-eta1-{args.budget}", final, "gmm-fd")
        for label, method in zip(specs, methods):
            ratios = [value_at(result, method.name, c, "gmm-fd") / result.value("envelope-best", c, "gmm-fd")
                      for c in checkpoints if c >= 0.2 * args.budget]
            fin = value_at(result, method.name, final, "gmm-fd")
            last = max(method.frame_nfes(target.schedule))
            if last < final:  # a capped layout ends early: its final is the last frame
                fin = value_at(result, method.name, last, "gmm-fd") if last in checkpoints else fin
            table.setdefault(label, {})[schedule] = (max(ratios), fin / vanilla)
        print(f"\n{schedule}: envelope-best " + ", ".join(
            f"{c}: {result.value('envelope-best', c, 'gmm-fd'):.4f}" for c in checkpoints), flush=True)
    print(f"\n### Candidates × schedules (budget {args.budget}, {args.num_samples} samples): worst FD / "
          "envelope-best at checkpoints >= 20 % / final FD / vanilla DDIM final\n")
    print("| candidate | " + " | ".join(args.schedules) + " |\n|---|" + "---|" * len(args.schedules))
    for label, cells in table.items():
        print(f"| {label} | " + " | ".join(
            "nan" if math.isinf(cells[s][0]) else f"{cells[s][0]:.2f} / {cells[s][1]:.2f}" for s in args.schedules)
            + " |")


if __name__ == "__main__":
    main()
