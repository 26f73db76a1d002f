#!/usr/bin/env python
"""Anytime quality on the exact Gaussian-mixture oracle — thin `nested-diffusion evaluate` runs.

Every number comes from ``nested-diffusion evaluate --model gmm:SCHEDULE:PREDICTION`` (the same
engine, seeds and caches as any user run); this script only chooses the runs and prints the
summary tables of BENCHMARKS.md §1 and §6. Each run's command line is printed above its table.

    python benchmarks/gmm_quality.py --table goals        # default vs old default vs vanilla vs envelope
    python benchmarks/gmm_quality.py --table eta          # η grid of the paper's 10×10 DDIM layout
    python benchmarks/gmm_quality.py --table planner      # the square rule (100 → 10×10) against other exponents
    python benchmarks/gmm_quality.py --table all          # everything (~40 min on 2 busy CPU cores)

Outputs (shards, results.csv/json, plots) go to ``--out`` (default ``benchmarks/results/gmm``); a
rerun reuses every cached shard.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from nested_diffusion.cli import main as cli
from nested_diffusion.evaluation import anytime_score, default_checkpoints, load_results, markdown_table, value_at
from nested_diffusion.planner import plan_schedule

SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTIONS = ("epsilon", "v_prediction", "sample")
ENVELOPE = ("ddim:0", "ddim:1", "dpmpp-2m:0", "dpmpp-2m:1")  # the four exact-N samplers
METRIC = "gmm-fd"
#: near the 2,000-sample floor (FD ≈ 0.07) two values within this count as equal
FLOOR_TOLERANCE = 0.01


def parse_args(doc: str, tables: tuple[str, ...], cache: str) -> argparse.Namespace:
    """The oracle benchmarks' shared options (``--table``, ``--schedule``, ``--num-samples``,
    ``--cache``, ``--threads``) — used by ``restore_oracle.py``; applies ``--threads`` and creates the
    cache's folder."""
    import torch

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", choices=(*tables, "all"), default="all")
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help="for --table main (default: all three)")
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--cache", type=Path, default=Path(cache))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    return args


def run(out: Path, model: str, budget: int, nested: list[str], *, num_samples: int, vanilla: bool = True,
        envelope: bool = True, checkpoints: tuple[int, ...] | None = None):
    """One `nested-diffusion evaluate` run (resumed from its shards) and its results."""
    argv = ["evaluate", "--model", model, "--num-samples", str(num_samples), "--batch-size", "500",
            "--budget", str(budget), "--quiet", "--out", str(out)]
    if checkpoints:
        argv += ["--checkpoints", ",".join(map(str, checkpoints))]
    for spec in nested:
        argv += ["--nested", spec]
    argv += ["--vanilla", "ddim:1"] if vanilla else ["--no-vanilla"]
    for spec in ENVELOPE if envelope else ():
        argv += ["--envelope", spec]
    if not envelope:
        argv += ["--no-envelope"]
    print("\n$ nested-diffusion " + " ".join(shlex.quote(a) for a in argv), flush=True)
    if cli(argv) != 0:
        sys.exit(f"evaluate failed: {argv}")
    return load_results(out)


def old_default(budget: int) -> str:
    """The layout shipped before issue 12: plan_schedule's inner counts, uniform outer grid,
    DPM-Solver++(2M) η .85 inner runs, DDIM outer step η 1."""
    inner = plan_schedule(budget)
    return f"{len(inner)}x{'/'.join(map(str, inner))}:dpmpp-2m"


def goals_row(result, method: str, budget: int) -> dict[str, float]:
    """The issue's bar for one method: worst FD / envelope-best at checkpoints >= 20 % of the budget
    (values within FLOOR_TOLERANCE of the envelope count as equal: ratio 1), the smallest vanilla /
    method ratio at checkpoints <= 50 %, final / vanilla DDIM final, the first frame's checkpoint."""
    cps = sorted({r["nfe"] for r in result.rows if r["method"] == "envelope-best"})
    vanilla = f"vanilla-ddim-eta1-{budget}"
    ratios = []
    for c in cps:
        if c >= 0.2 * budget:
            v, e = value_at(result, method, c, METRIC), result.value("envelope-best", c, METRIC)
            ratios.append(1.0 if v - e <= FLOOR_TOLERANCE else v / e)
    better = min(value_at(result, vanilla, c, METRIC) / value_at(result, method, c, METRIC)
                 for c in cps if c <= 0.5 * budget)
    first = next((c for c in cps if value_at(result, method, c, METRIC) < math.inf), math.inf)
    return {"worst": max(ratios), "better": better,
            "final": value_at(result, method, cps[-1], METRIC) / result.value(vanilla, cps[-1], METRIC),
            "final_fd": value_at(result, method, cps[-1], METRIC), "first": first,
            "score": anytime_score(result, method, METRIC)}


def table_goals(args) -> None:
    print("\n## Goals: project default (`plan`) vs the old default, vanilla previews and the envelope\n")
    summary = []
    cases = [(s, "epsilon", b) for b in args.budgets for s in SCHEDULES]
    cases += [(s, p, 100) for s in SCHEDULES for p in PREDICTIONS[1:] if 100 in args.budgets]
    for schedule, pred, budget in cases:
        model = f"gmm:{schedule}:{pred}"
        out = args.out / f"goals-{schedule}-{pred}-{budget}"
        nested = ["plan", old_default(budget)] + (["10x10"] if budget == 100 and pred == "epsilon" else [])
        result = run(out, model, budget, nested, num_samples=args.num_samples)
        print(f"\n#### {model}, budget {budget}, {args.num_samples} samples (FD, lower is better)\n")
        print(markdown_table(result, METRIC))
        for method in dict.fromkeys(r["method"] for r in result.rows if r["kind"] == "nested"):
            summary.append((schedule, pred, budget, method, goals_row(result, method, budget)))
    print("\n### Against the bar: worst FD/envelope-best at >= 20 % of the budget (<= 1.2; within "
          f"{FLOOR_TOLERANCE} counts as 1) · vanilla/nested at <= 50 % (>= 10) · final/vanilla DDIM final (<= 1) · "
          "first frame (<= 10 %)\n")
    print("| schedule | prediction | budget | layout | worst ×envelope | ×better than previews | final / vanilla "
          "(final FD) | first frame | anytime score |")
    print("|---|---|---|---|---|---|---|---|---|")
    for schedule, pred, budget, method, g in summary:
        label = "**plan (default)**" if "renoise" in method else method
        print(f"| {schedule} | {pred} | {budget} | {label} | {g['worst']:.2f} | {g['better']:.1f} | "
              f"{g['final']:.2f} ({g['final_fd']:.3f}) | {g['first']} | {g['score']:.2f} |")


def table_eta(args) -> None:
    print("\n## η grid, nested 10×10 DDIM inner, DDIM outer: anytime score / final FD\n")
    grid = [(i, o) for i in (0.0, 0.5, 0.85, 1.0) for o in (0.0, 0.5, 1.0)]
    cells = {}
    for schedule in SCHEDULES:
        out = args.out / f"goals-{schedule}-epsilon-100"  # shares the goals run's vanilla and envelope shards
        specs = [f"10x10:ddim:{i:g}:{o:g}" for i, o in grid]
        result = run(out, f"gmm:{schedule}:epsilon", 100, specs, num_samples=args.num_samples)
        for (i, o), spec in zip(grid, specs):
            name = next(m for m in dict.fromkeys(r["method"] for r in result.rows)
                        if m.startswith(f"nested-10x10-ddim-eta{i:g}") and (m.endswith(f"outer{o:g}") or
                                                                           (o == 1.0 and "outer" not in m)))
            cells[(schedule, i, o)] = (anytime_score(result, name, METRIC), value_at(result, name, 100, METRIC))
    print("| η_inner | η_outer | " + " | ".join(SCHEDULES) + " |\n|---|---|" + "---|" * len(SCHEDULES))
    for i, o in grid:
        print(f"| {i:g} | {o:g} | " + " | ".join(f"{cells[(s, i, o)][0]:.2f} / {cells[(s, i, o)][1]:.3f}"
                                                for s in SCHEDULES) + " |")


def square_rule(budget: int, exponent: float) -> tuple[int, int]:
    """The uniform layout of issue 2's planner: inner = round(budget^e), outer = budget // inner."""
    inner = max(1, round(budget ** exponent))
    return budget // inner, inner


def table_planner(args) -> None:
    print("\n## the square rule: inner = round(budget^e), outer = budget // inner (linear, DDIM η .85 inner)\n")
    print("| budget | e | outer×inner | anytime score | final FD |\n|---|---|---|---|---|")
    for budget in (20, 50, 100):
        plans = [(e, square_rule(budget, e)) for e in (0.3, 0.4, 0.5, 0.6, 0.7)]
        specs = list(dict.fromkeys(f"{outer}x{inner}" for _, (outer, inner) in plans))
        result = run(args.out / f"planner-linear-{budget}", "gmm:linear:epsilon", budget, specs,
                     num_samples=args.num_samples, vanilla=False)
        for e, (outer, inner) in plans:
            name = f"nested-{outer}x{inner}-ddim-eta0.85"
            final = value_at(result, name, default_checkpoints(budget)[-1], METRIC)
            print(f"| {budget} | {e} | {outer}×{inner} | {anytime_score(result, name, METRIC):.2f} | "
                  f"{final:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", choices=("goals", "eta", "planner", "all"), default="goals")
    p.add_argument("--budgets", type=int, nargs="+", default=[100, 50, 20])
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gmm"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tables = ("goals", "eta", "planner") if args.table == "all" else (args.table,)
    for t in tables:
        {"goals": table_goals, "eta": table_eta, "planner": table_planner}[t](args)


if __name__ == "__main__":
    main()
