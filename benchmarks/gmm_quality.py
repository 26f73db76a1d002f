#!/usr/bin/env python
"""Anytime quality on the exact Gaussian-mixture oracle (Fréchet distance to the true mixture).

The mixture is fitted to scikit-learn's 8×8 digits (d = 64, one Gaussian per class); its
denoiser E[x0 | x_t] is exact, so these numbers measure the samplers alone. Every method uses
the same noise and sampler seed. "FD at n NFEs" is the FD of the last frame whose NFE count is
<= n; the *envelope* at n is the best of separate, non-anytime runs with exactly n steps
(DDIM η ∈ {0, 1}, DPM-Solver++(2M) and its SDE variant).

    python benchmarks/gmm_quality.py --table main          # nested vs vanilla vs envelope
    python benchmarks/gmm_quality.py --table defaults      # η grid over three schedules
    python benchmarks/gmm_quality.py --table planner       # outer × inner rule for a budget
    python benchmarks/gmm_quality.py --table predictions   # defaults × schedules × prediction types

Results are cached in ``--cache`` (JSON) and printed as Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from nested_diffusion import nested_sample, vanilla_sample
from nested_diffusion.schedules import make_alphas_cumprod
from nested_diffusion.testing import GaussianMixture

CHECKPOINTS = (10, 20, 30, 50, 75, 100)
SCHEDULES = ("linear", "scaled_linear", "cosine")


class Bench:
    def __init__(self, n: int, cache: Path, seed: int = 0) -> None:
        self.gmm = GaussianMixture.from_digits()
        self.n, self.seed, self.cache_path = n, seed, cache
        self.cache = json.loads(cache.read_text()) if cache.exists() else {}

    def noise(self) -> torch.Tensor:
        return torch.randn(self.n, self.gmm.dim, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)

    def curve(self, key: str, make_session) -> dict[int, float]:
        """{nfe: FD} for every frame of a session (cached by ``key``)."""
        key = f"n={self.n},seed={self.seed}|{key}"
        if key not in self.cache:
            self.cache[key] = {str(f.nfe): self.gmm.frechet_distance(f.image) for f in make_session()}
            self.cache_path.write_text(json.dumps(self.cache, indent=0))
        return {int(k): v for k, v in self.cache[key].items()}

    def nested(self, schedule: str, pred: str = "epsilon", sampler_seed: int = 1, **kw) -> dict[int, float]:
        from nested_diffusion import nested

        kw.setdefault("inner_eta", nested.DEFAULT_INNER_ETA)  # resolved, so the cache key names them
        kw.setdefault("outer_eta", nested.DEFAULT_OUTER_ETA)
        ac = make_alphas_cumprod(schedule)
        key = f"nested|{schedule}|{pred}|{sampler_seed}|" + ",".join(f"{k}={v}" for k, v in sorted(kw.items()))
        return self.curve(key, lambda: nested_sample(self.gmm.model(ac, pred), ac, self.noise(), prediction_type=pred,
                                                     generator=torch.Generator().manual_seed(sampler_seed), **kw))

    def vanilla(self, schedule: str, pred: str = "epsilon", sampler_seed: int = 1, **kw) -> dict[int, float]:
        ac = make_alphas_cumprod(schedule)
        key = f"vanilla|{schedule}|{pred}|{sampler_seed}|" + ",".join(f"{k}={v}" for k, v in sorted(kw.items()))
        return self.curve(key, lambda: vanilla_sample(self.gmm.model(ac, pred), ac, self.noise(), prediction_type=pred,
                                                      generator=torch.Generator().manual_seed(sampler_seed), **kw))

    def envelope(self, schedule: str, checkpoints=CHECKPOINTS) -> dict[int, float]:
        out = {}
        for n in checkpoints:
            finals = [self.vanilla(schedule, steps=n, sampler=s, eta=e)[n]
                      for s, e in (("ddim", 0.0), ("ddim", 1.0), ("dpmpp-2m", 0.0), ("dpmpp-2m", 1.0))]
            out[n] = min(finals)
        return out


def at(curve: dict[int, float], n: int) -> float:
    """FD of the last frame with NFE <= n (inf if none)."""
    done = [k for k in curve if k <= n]
    return curve[max(done)] if done else math.inf


def row(name: str, curve: dict[int, float], checkpoints=CHECKPOINTS) -> str:
    return f"| {name} | " + " | ".join(f"{at(curve, n):.3g}" for n in checkpoints) + " |"


def header(first: str, checkpoints=CHECKPOINTS) -> str:
    return (f"| {first} | " + " | ".join(f"{n} NFE" for n in checkpoints) + " |\n|---|"
            + "---|" * len(checkpoints))


def anytime_score(curve: dict[int, float], envelope: dict[int, float], checkpoints=CHECKPOINTS) -> float:
    """Geometric mean of FD / envelope FD over the checkpoints (1 = as good as knowing the budget)."""
    return math.exp(sum(math.log(at(curve, n) / envelope[n]) for n in checkpoints) / len(checkpoints))


def table_main(b: Bench, schedule: str) -> None:
    env = b.envelope(schedule)
    vanilla = {f"vanilla DDIM η=1, 100 steps (x̂0 previews)": b.vanilla(schedule, steps=100, eta=1.0),
               f"vanilla DDIM η=0, 100 steps (x̂0 previews)": b.vanilla(schedule, steps=100, eta=0.0),
               f"vanilla DPM++2M, 100 steps (x̂0 previews)": b.vanilla(schedule, steps=100, sampler="dpmpp-2m", eta=0.0)}
    spread = [b.vanilla(schedule, steps=100, eta=1.0, sampler_seed=s)[100] for s in (1, 2, 3, 4, 5)]
    configs = {}
    for K, M in ((10, 10), (20, 5), (5, 20), (25, 4)):
        configs[f"nested {K}×{M} (defaults)"] = b.nested(schedule, outer_steps=K, inner_steps=M)
    configs["nested 10×10 DDIM η_in .85, η_out 0 (paper)"] = b.nested(schedule, inner_eta=0.85, outer_eta=0.0)
    configs["nested 10×10 DPM++2M inner (defaults η)"] = b.nested(schedule, inner_sampler="dpmpp-2m")
    configs["nested 10×10 η_in 0, η_out 0"] = b.nested(schedule, inner_eta=0.0, outer_eta=0.0)
    print(f"\n### {schedule} schedule, epsilon prediction, {b.n} samples (FD, lower is better)\n")
    print(header("method"))
    for name, c in {**vanilla, **configs}.items():
        print(row(name, c))
    print(row("envelope (best separate run with exactly n steps)", env))
    print(f"\nVanilla DDIM η=1 100-step final over 5 sampler seeds: "
          f"{min(spread):.3f}–{max(spread):.3f} (mean {sum(spread) / 5:.3f}).")
    v = vanilla["vanilla DDIM η=1, 100 steps (x̂0 previews)"]
    print("\n| nested config | worst ratio vanilla/nested at ≤ 50 NFE | final / vanilla final | anytime score (×envelope) |\n|---|---|---|---|")
    for name, c in configs.items():
        ratio = min(at(v, n) / at(c, n) for n in CHECKPOINTS if n <= 50)
        print(f"| {name} | {ratio:.1f}× | {at(c, 100) / at(v, 100):.2f} | {anytime_score(c, env):.2f} |")


def table_defaults(b: Bench) -> None:
    print(f"\n### η grid, nested 10×10 DDIM inner, {b.n} samples: anytime score (geometric mean of FD/envelope "
          f"over {CHECKPOINTS} NFEs) / final FD\n")
    print("| η_inner | η_outer | " + " | ".join(SCHEDULES) + " | worst score |\n|---|---|" + "---|" * (len(SCHEDULES) + 1))
    envs = {s: b.envelope(s) for s in SCHEDULES}
    results = []
    for inner_eta in (0.0, 0.5, 0.85, 1.0):
        for outer_eta in (0.0, 0.5, 1.0):
            cells, worst = [], 0.0
            for s in SCHEDULES:
                c = b.nested(s, inner_eta=inner_eta, outer_eta=outer_eta)
                score = anytime_score(c, envs[s])
                worst = max(worst, score)
                cells.append(f"{score:.2f} / {at(c, 100):.3f}")
            results.append((worst, inner_eta, outer_eta))
            print(f"| {inner_eta} | {outer_eta} | " + " | ".join(cells) + f" | {worst:.2f} |")
    for s in SCHEDULES:
        print(f"| vanilla DDIM η=1 final, {s} | | {at(b.vanilla(s, steps=100, eta=1.0), 100):.3f} |")
    best = min(results)
    print(f"\nBest worst-case score: η_inner = {best[1]}, η_outer = {best[2]} ({best[0]:.2f}).")


def table_planner(b: Bench, schedule: str = "linear") -> None:
    from nested_diffusion import plan_steps

    print(f"\n### Planner: inner = round(budget^e), outer = budget // inner ({schedule}, defaults η, {b.n} samples)\n")
    print("| budget | e | outer×inner | anytime score | final FD |\n|---|---|---|---|---|")
    for budget in (20, 50, 100):
        cps = tuple(n for n in CHECKPOINTS if n <= budget) + ((budget,) if budget not in CHECKPOINTS else ())
        env = b.envelope(schedule, cps)
        for e in (0.3, 0.4, 0.5, 0.6, 0.7):
            plan = plan_steps(budget, e)
            c = b.nested(schedule, outer_steps=plan.outer_steps, inner_steps=plan.inner_steps)
            print(f"| {budget} | {e} | {plan.outer_steps}×{plan.inner_steps} | {anytime_score(c, env, cps):.2f} | "
                  f"{at(c, budget):.3f} |")


def table_predictions(b: Bench) -> None:
    print(f"\n### Defaults across schedules and prediction types (nested 10×10 vs vanilla DDIM η=1 100 steps, {b.n} samples)\n")
    print("| schedule | prediction | nested FD @10 | vanilla FD @10 | nested final | vanilla final |\n|---|---|---|---|---|---|")
    for s in SCHEDULES:
        for pred in ("epsilon", "v_prediction", "sample"):
            c, v = b.nested(s, pred), b.vanilla(s, pred, steps=100, eta=1.0)
            print(f"| {s} | {pred} | {at(c, 10):.3f} | {at(v, 10):.2f} | {at(c, 100):.3f} | {at(v, 100):.3f} |")


def parse_args(doc: str, tables: tuple[str, ...], cache: str) -> argparse.Namespace:
    """The oracle benchmarks' shared options (``--table``, ``--schedule``, ``--num-samples``,
    ``--cache``, ``--threads``); applies ``--threads`` and creates the cache's folder."""
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


def main() -> None:
    args = parse_args(__doc__, ("main", "defaults", "planner", "predictions"), "benchmarks/results/gmm_quality.json")
    b = Bench(args.num_samples, args.cache)
    tables = ("main", "defaults", "planner", "predictions") if args.table == "all" else (args.table,)
    for t in tqdm(tables, desc="tables"):
        if t == "main":
            for s in ([args.schedule] if args.schedule else SCHEDULES):
                table_main(b, s)
        elif t == "defaults":
            table_defaults(b)
        elif t == "planner":
            table_planner(b)
        else:
            table_predictions(b)


if __name__ == "__main__":
    main()
