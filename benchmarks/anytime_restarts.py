"""Restart rules of the planned default compared on the tuning schedules (BENCHMARKS.md §12, "How it was chosen").

Each variant is the plan's frames and grids with other restart levels (or another sampler for the last run),
run through the library (``plan_layout(..., sigmas=...)``, ``nested_sample``) on independent 10,000-sample sets of
the exact Gaussian-mixture oracle; the table shows each frame's exact FD on every set. Variants whose levels
equal an earlier one's are not rerun.

    python benchmarks/anytime_restarts.py --schedules linear,cosine --budgets 30,50,100 [--variants …] [--sets 2] [--samples 10000]
    python benchmarks/anytime_restarts.py --schedules linear,flow:2 --budgets 50 --levels 8,1.31,0.89,0.65 --grid auto

Variants: ``default`` (the plan: ``default_outer_sigmas``, its grids), ``previous`` (the plan before this
issue's last change: σ = 10·n^-0.75 for every restart, Karras restart grids on VP, the schedule's own on flow),
``longer-runs`` (the previous levels × (M/10)² before a run of M > 10 steps, at most 4.5, never above the
previous restart: better on linear and cosine, worse on the held-out flow schedules, so not adopted —
BENCHMARKS.md §12), ``last-3m-sde`` (the previous levels, the last run DPM-Solver++(3M) SDE η 1 on its Karras
grid). ``--levels`` gives the restart levels σ/α outright (one list: one budget) and ``--grid`` the restarts'
grid (``karras``, ``logsnr``, ``auto``: log-SNR from σ/α ≥ 2 and Karras below, or ``own``: the schedule's);
without them each variant keeps its own.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from tqdm import tqdm

from nested_diffusion import nested_sample
from nested_diffusion.evaluation import load_target
from nested_diffusion.planner import default_outer_sigmas, plan_frames, plan_layout, restart_noise_level
from nested_diffusion.samplers import make_sampler
from nested_diffusion.schedules import FlowMatching


def previous_levels(budget: int, schedule) -> list[float]:
    """σ = 10·n^-0.75 (clipped to [0.14, 4.5]) after n NFEs, for every restart (the first too)."""
    return [restart_noise_level(n) for n in itertools.accumulate(plan_frames(budget, max_steps=schedule.max_steps)[:-1])]


def longer_run_levels(budget: int, schedule, m0: int = 10, q: float = 2.0, hi: float = 4.5) -> list[float]:
    """The previous levels × (M/m0)^q before a run of M > m0 steps (at most ``hi``), never above the previous."""
    inner = plan_frames(budget, max_steps=schedule.max_steps)
    levels: list[float] = []
    for sigma, m in zip(previous_levels(budget, schedule), inner[1:]):
        sigma = min(hi, sigma * max(1.0, m / m0) ** q)
        levels.append(min(sigma, levels[-1]) if levels else sigma)
    return levels


def default_levels(budget: int, schedule) -> list[float]:
    """The plan's own restart levels (``default_outer_sigmas``: 10·n^-0.75 after n NFEs, the first at least
    175·n^-2 capped at 8)."""
    return list(default_outer_sigmas(budget, schedule))


VARIANTS = {"default": default_levels, "previous": previous_levels, "longer-runs": longer_run_levels,
            "last-3m-sde": previous_levels}
#: each variant's restart grids when --grid is not given (None: the plan's)
GRIDS = {"default": None, "previous": "previous", "longer-runs": "previous", "last-3m-sde": "previous"}


def restart_grids(schedule, levels: list[float], grid: str | None) -> list[str] | None:
    """The restarts' grid names for ``--grid`` (``previous``: Karras on VP, the schedule's own on flow)."""
    if grid is None:
        return None
    if grid == "previous":
        grid = "own" if isinstance(schedule, FlowMatching) else "karras"
    if grid == "auto":
        return ["logsnr" if s >= 2 else "karras" for s in levels]
    return [schedule.spacing if grid == "own" else grid] * len(levels)


def frames(target, budget: int, variant: str, samples: int, seed: int, levels: list[float] | None = None,
           grid: str | None = None) -> list[tuple[int, float]]:
    """``[(NFEs, FD)]`` of one variant's frames on the sample set ``seed``."""
    levels = VARIANTS[variant](budget, target.schedule) if levels is None else levels
    layout = plan_layout(budget, target.schedule, sigmas=levels)
    kwargs = layout.session_kwargs()
    grids = restart_grids(target.schedule, levels, GRIDS[variant] if grid is None else grid)
    if grids is not None:
        kwargs["inner_spacing"] = [layout.inner_spacing[0]] + grids[:len(layout.inner_steps) - 1]
    if variant == "last-3m-sde":
        runs = len(layout.inner_steps)
        kwargs.update(inner_sampler=[make_sampler("unipc")] * (runs - 1) + [make_sampler("dpmpp-3m-sde", 1.0)],
                      inner_eta=None)
    noise = torch.randn(samples, target.gmm.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    session = nested_sample(target.model, target.schedule, noise, prediction_type=target.prediction_type,
                            generator=torch.Generator().manual_seed(seed + 7), **kwargs)
    return [(f.nfe, target.gmm.frechet_distance(f.image)) for f in session]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedules", default="linear,cosine")
    p.add_argument("--budgets", default="30,50,100")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--sets", type=int, default=2)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--levels", help="restart levels σ/α, comma-separated (one budget)")
    p.add_argument("--grid", choices=["karras", "logsnr", "auto", "own"], help="the restarts' grid")
    args = p.parse_args()
    levels = None if args.levels is None else [float(v) for v in args.levels.split(",")]
    if levels is not None and "," in args.budgets:
        p.error("--levels gives one budget's restart levels: give one --budgets")
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {sorted(VARIANTS)}")
    jobs = [(s, int(b), v) for s in args.schedules.split(",") for b in args.budgets.split(",") for v in names]
    print("| schedule | budget | variant | levels σ/α | frames: FD on each set |")
    print("|---|---|---|---|---|")
    seen: dict[tuple, str] = {}
    targets = {s: load_target(f"gmm:{s}") for s in dict.fromkeys(s for s, _, _ in jobs)}
    for schedule, budget, variant in tqdm(jobs, desc="variants"):
        target = targets[schedule]
        given = levels if levels is not None else VARIANTS[variant](budget, target.schedule)
        shown = tuple(round(s, 3) for s in given)
        grids = restart_grids(target.schedule, given, GRIDS[variant] if args.grid is None else args.grid)
        key = (schedule, budget, shown, None if grids is None else tuple(grids), variant == "last-3m-sde")
        if key in seen:
            tqdm.write(f"| {schedule} | {budget} | {variant} | = {seen[key]} | |")
            continue
        seen[key] = variant
        runs = [frames(target, budget, variant, args.samples, seed, levels, args.grid) for seed in range(args.sets)]
        cells = "; ".join(f"{n}: " + " / ".join(f"{run[k][1]:.4f}" for run in runs)
                          for k, (n, _) in enumerate(runs[0]) if k > 0)
        tqdm.write(f"| {schedule} | {budget} | {variant} | {', '.join(f'{s:g}' for s in shown)}"
                   f"{'' if grids is None else ' (' + '/'.join(grids) + ')'} | {cells} |")


if __name__ == "__main__":
    main()
