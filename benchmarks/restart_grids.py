"""How accurate is one restarted run, by grid? (BENCHMARKS.md §12, "Restart grids".)

Exact samples of the Gaussian-mixture oracle, re-noised to σ/α = s (fresh noise), then one UniPC run of M
steps back to clean data on each grid; the table is the exact FD of the result. The input is exact, so what is
left above the converged value (the last columns) is the run's own discretization error: what a restart adds
to a frame on top of what it inherits. 10,000 samples, one sample set (its own FD in the header).

    python benchmarks/restart_grids.py --schedules linear,cosine,flow:2 --levels 1.3,3,4.5 --steps 6,8,10,13 \
        --grids karras,logsnr
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm

from nested_diffusion import nested_sample
from nested_diffusion.evaluation import load_target


def restarted(target, x0: torch.Tensor, level: float, steps: int, grid: str, seed: int = 6) -> float:
    """FD after re-noising ``x0`` to noise level ``level`` and one ``steps``-step UniPC run on ``grid``."""
    schedule = target.schedule
    tau = schedule.at_noise_level(level)
    lv = schedule.level(tau)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype)
    name, _, rho = grid.partition(":")
    spaced = schedule.replace(spacing=name, **({"rho": float(rho)} if rho else {}))
    session = nested_sample(target.model, spaced, lv.alpha * x0 + lv.sigma * z, prediction_type=target.prediction_type,
                            outer_timesteps=[tau], inner_steps=[steps], inner_sampler="unipc",
                            generator=torch.Generator().manual_seed(1))
    return target.gmm.frechet_distance(session.run().image)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedules", default="linear,cosine,flow:2")
    p.add_argument("--levels", default="1.3,3,4.5")
    p.add_argument("--steps", default="6,8,10,13")
    p.add_argument("--grids", default="karras,logsnr", help="spacing names; karras:RHO for another ρ")
    p.add_argument("--samples", type=int, default=10_000)
    args = p.parse_args()
    steps = [int(m) for m in args.steps.split(",")]
    print(f"| schedule | σ/α | grid | {' | '.join(f'{m} steps' for m in steps)} |")
    print("|---|---|---|" + "---|" * len(steps))
    for name in args.schedules.split(","):
        target = load_target(f"gmm:{name}")
        x0 = target.gmm.sample(args.samples, generator=torch.Generator().manual_seed(5))[0].double()
        tqdm.write(f"| {name} (exact samples: {target.gmm.frechet_distance(x0):.4f}) | | |" + " |" * len(steps))
        for level in tqdm([float(s) for s in args.levels.split(",")], desc=name):
            for grid in args.grids.split(","):
                cells = " | ".join(f"{restarted(target, x0, level, m, grid):.4f}" for m in steps)
                tqdm.write(f"| {name} | {level:g} | {grid} | {cells} |")


if __name__ == "__main__":
    main()
