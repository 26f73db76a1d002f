#!/usr/bin/env python
"""Anytime restoration on the exact Gaussian-mixture oracle (issue 11): FD to the exact posterior.

The prior is the 8×8-digits mixture (d = 64, shaped 1×8×8); its denoiser and, for a linear
measurement y = Hx0 + σ_y n, its posterior p(x0 | y) are exact (``GaussianMixture.posterior``), so
these numbers measure the samplers alone. One ground truth x0 ~ prior and one measurement y per
case; every method restores that y ``--num-samples`` times from the same initial noise and sampler
seed. "FD at n NFEs" is the FD of the last frame with nfe <= n (nested: the inner run's restoration;
DDRM: its x̂0 preview); the *envelope* at n is the best final of separate DDRM runs with exactly n
steps (η ∈ {0.85, 1}, grid power 1 or 2). The residual ratio is E‖Hx̂ - y‖² / (m σ_y²) (an exact posterior sampler:
≈ 1, shown per case as "posterior"); the noise floor is the FD of the same number of exact
posterior samples.

    python benchmarks/restore_oracle.py --table main       # per schedule: every method (FD, residual)
    python benchmarks/restore_oracle.py --table search     # layout / η candidates over all schedules
    python benchmarks/restore_oracle.py --table summary    # the default against the issue's quality bar

Results are cached in ``--cache`` (JSON) and printed as Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from gmm_quality import SCHEDULES, parse_args  # benchmarks/ is on sys.path when run as a script
from tqdm import tqdm

from nested_diffusion import ddrm_sample, nested_restore
from nested_diffusion.defaults import (DEFAULT_DDRM_ETA, DEFAULT_RESTORE_INNER_ETA,
                                       DEFAULT_RESTORE_INNER_GRID_POWER, DEFAULT_RESTORE_OUTER_ETA)
from nested_diffusion.planner import plan_schedule
from nested_diffusion.restoration import Dense, Inpainting, SuperResolution, residual_ratio
from nested_diffusion.schedules import make_alphas_cumprod
from nested_diffusion.testing import GaussianMixture

CHECKPOINTS = (10, 20, 30, 50, 75, 100)
CASES = ("inpaint-half", "sr2", "dense-20x64")
SHAPE = (1, 8, 8)
DEFAULT = "/".join(map(str, plan_schedule(100)))  # the layout nested_restore uses by default
#: nested candidates: (inner counts, inner η, outer η, inner kind, inner grid power)
CANDIDATES = [
    (DEFAULT, DEFAULT_RESTORE_INNER_ETA, DEFAULT_RESTORE_OUTER_ETA, "ddrm", DEFAULT_RESTORE_INNER_GRID_POWER),
    # DDRM's η, evenly spaced inner grids (the lead of PAPER.md), and the outer η
    ("10/10/10/20/25/25", 0.85, 1.0, "ddrm", 1.0),
    ("10/10/10/20/25/25", 0.85, 0.5, "ddrm", 1.0),
    ("10/10/10/20/25/25", 0.85, 0.0, "ddrm", 1.0),
    ("10/10/10/20/25/25", 1.0, 1.0, "ddrm", 1.0),
    # inner grids bent towards t = 0, inner η
    ("10/10/10/20/25/25", 0.85, 1.0, "ddrm", 1.5),
    ("10/10/10/20/25/25", 0.85, 1.0, "ddrm", 1.75),
    ("10/10/10/20/25/25", 0.85, 1.0, "ddrm", 2.0),
    ("10/10/10/20/25/25", 0.85, 0.5, "ddrm", 2.0),
    ("10/10/10/20/25/25", 0.7, 1.0, "ddrm", 2.0),
    ("10/10/10/20/25/25", 0.9, 1.0, "ddrm", 1.5),
    ("10/10/10/20/25/25", 0.9, 1.0, "ddrm", 1.75),
    ("10/10/10/20/25/25", 0.9, 1.0, "ddrm", 2.0),
    ("10/10/10/20/25/25", 0.9, 0.5, "ddrm", 2.0),
    ("10/10/10/20/25/25", 0.9, 1.0, "ddrm", 2.5),
    ("10/10/10/20/25/25", 0.95, 1.0, "ddrm", 1.5),
    ("10/10/10/20/25/25", 0.95, 1.0, "ddrm", 2.0),
    ("10/10/10/20/25/25", 0.95, 0.5, "ddrm", 2.0),
    ("10/10/10/20/25/25", 0.95, 1.0, "ddrm", 2.5),
    ("10/10/10/20/25/25", 0.95, 1.0, "ddrm", 3.0),
    ("10/10/10/20/25/25", 0.97, 1.0, "ddrm", 2.0),
    ("10/10/10/20/25/25", 1.0, 1.0, "ddrm", 1.5),
    ("10/10/10/20/25/25", 1.0, 1.0, "ddrm", 2.0),
    # other layouts
    ("10/10/10/10/10/10/10/10/10/10", 0.85, 1.0, "ddrm", 1.0),
    ("10/10/10/10/10/10/10/10/10/10", 0.85, 1.0, "ddrm", 2.0),
    ("10/10/10/10/10/10/10/10/10/10", 0.9, 1.0, "ddrm", 2.0),
    ("10/10/10/10/10/25/25", 0.85, 1.0, "ddrm", 2.0),
    ("10/10/10/10/10/25/25", 0.9, 1.0, "ddrm", 2.0),
    ("10/10/10/20/50", 0.85, 1.0, "ddrm", 2.0),
    ("20/20/20/20/20", 0.85, 1.0, "ddrm", 2.0),
    ("5/5/5/5/5/5/5/5/5/5/5/5/5/5/5/5/5/5/5/5", 0.85, 1.0, "ddrm", 2.0),
]
CANDIDATES = list(dict.fromkeys(CANDIDATES))  # the default is usually one of the others
PSC = CANDIDATES[0][:3] + ("unconditional", CANDIDATES[0][4])
#: the envelope: the best of these DDRM configurations (η, grid power) run with exactly n steps
ENVELOPE = ((0.85, 1.0), (1.0, 1.0), (0.85, 2.0), (1.0, 2.0))


def nested_name(spec) -> str:
    inner, eta, outer_eta, kind, power = spec
    counts = inner.split("/")
    layout = f"{len(counts)}×{counts[0]}" if len(set(counts)) == 1 else f"{len(counts)}×{inner}"
    return (f"nested {layout}, η {eta:g}, outer η {outer_eta:g}" + (f", grid power {power:g}" if power != 1 else "")
            + (", unconditional inner (PSC)" if kind != "ddrm" else ""))


class Bench:
    def __init__(self, n: int, cache: Path, seed: int = 0) -> None:
        self.gmm = GaussianMixture.from_digits()
        self.n, self.seed, self.cache_path = n, seed, cache
        self.cache = json.loads(cache.read_text()) if cache.exists() else {}
        g = torch.Generator().manual_seed(seed)
        self.x0 = self.gmm.sample(1, g)[0].reshape(1, *SHAPE)
        mask = torch.zeros(64, dtype=torch.bool)
        mask[torch.randperm(64, generator=g)[:32]] = True
        H = torch.randn(20, 64, generator=g, dtype=torch.float64) / 8.0
        self.cases = {"inpaint-half": (Inpainting(mask.reshape(SHAPE)), 0.05), "sr2": (SuperResolution(2), 0.05),
                      "dense-20x64": (Dense(H), 0.1)}
        self.y = {c: op.measure(self.x0, s, g) for c, (op, s) in self.cases.items()}
        self.posterior = {c: self.gmm.posterior(op, self.y[c][0], s) for c, (op, s) in self.cases.items()}

    def _save(self) -> None:
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.cache, indent=0))
        tmp.replace(self.cache_path)

    def noise(self) -> torch.Tensor:
        return torch.randn(self.n, *SHAPE, generator=torch.Generator().manual_seed(self.seed + 1), dtype=torch.float64)

    def score(self, case: str, x: torch.Tensor) -> list[float]:
        op, sigma_y = self.cases[case]
        y = self.y[case].expand(len(x), *self.y[case].shape[1:])
        return [self.posterior[case].frechet_distance(x), residual_ratio(op, x, y, sigma_y)]

    def curve(self, case: str, key: str, make_session) -> dict[int, list[float]]:
        """{nfe: [FD, residual ratio]} for every frame of a session (cached by ``key``)."""
        key = f"n={self.n},seed={self.seed}|{key}"
        if key not in self.cache:
            self.cache[key] = {str(f.nfe): self.score(case, f.image) for f in make_session()}
            self._save()
        return {int(k): v for k, v in self.cache[key].items()}

    def floor(self, case: str) -> list[float]:
        """FD and residual ratio of n exact posterior samples."""
        key = f"n={self.n},seed={self.seed}|posterior|{case}"
        if key not in self.cache:
            x = self.posterior[case].sample(self.n, torch.Generator().manual_seed(self.seed + 3))[0]
            self.cache[key] = self.score(case, x.reshape(self.n, *SHAPE))
            self._save()
        return self.cache[key]

    def _common(self, schedule: str, case: str) -> dict:
        ac = make_alphas_cumprod(schedule)
        op, sigma_y = self.cases[case]
        return dict(model=self.gmm.model(ac), schedule=ac, noise=self.noise(), operator=op,
                    measurement=self.y[case].expand(self.n, *self.y[case].shape[1:]), sigma_y=sigma_y,
                    generator=torch.Generator().manual_seed(self.seed + 2))

    def ddrm(self, schedule: str, case: str, steps: int, eta: float = DEFAULT_DDRM_ETA,
             power: float = 1.0) -> dict[int, list[float]]:
        tail = f",power={power}" if power != 1 else ""
        return self.curve(case, f"ddrm|{schedule}|{case}|steps={steps},eta={eta}{tail}",
                          lambda: ddrm_sample(**self._common(schedule, case), steps=steps, eta=eta, grid_power=power))

    def nested(self, schedule: str, case: str, spec) -> dict[int, list[float]]:
        inner, eta, outer_eta, kind, power = spec
        counts = [int(c) for c in inner.split("/")]
        tail = f",power={power}" if power != 1 else ""
        return self.curve(case, f"nested|{schedule}|{case}|inner={inner},eta={eta},outer_eta={outer_eta},kind={kind}{tail}",
                          lambda: nested_restore(**self._common(schedule, case), outer_steps=len(counts),
                                                 inner_steps=counts, inner=kind, eta=eta, outer_eta=outer_eta,
                                                 inner_grid_power=power))

    def envelope(self, schedule: str, case: str) -> dict[int, list[float]]:
        """Best (by FD) final of separate DDRM runs with exactly n steps."""
        return {n: min((self.ddrm(schedule, case, n, eta, power)[n] for eta, power in ENVELOPE), key=lambda v: v[0])
                for n in CHECKPOINTS}


def at(curve: dict[int, list[float]], n: int, i: int = 0) -> float:
    """Value i (0: FD, 1: residual ratio) of the last frame with NFE <= n (inf if none)."""
    done = [k for k in curve if k <= n]
    return curve[max(done)][i] if done else math.inf


def geo(values) -> float:
    """Geometric mean (0 if any value is 0: a method with no frame yet)."""
    values = list(values)
    if min(values) == 0:
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


def header(first: str) -> str:
    return f"| {first} | " + " | ".join(f"{n} NFE" for n in CHECKPOINTS) + " |\n|---|" + "---|" * len(CHECKPOINTS)


def methods(b: Bench, schedule: str, case: str) -> dict[str, dict]:
    """The rows of the per-case tables (every candidate is in the search table)."""
    out = {nested_name(CANDIDATES[0]) + " (default)": b.nested(schedule, case, CANDIDATES[0])}
    for spec in CANDIDATES[1:2]:
        out[nested_name(spec) + " (PAPER.md's lead)"] = b.nested(schedule, case, spec)
    out[nested_name(PSC)] = b.nested(schedule, case, PSC)
    out[f"DDRM 100 steps, η {DEFAULT_DDRM_ETA:g} (x̂0 previews)"] = b.ddrm(schedule, case, 100)
    out["DDRM 100 steps, η 1 (x̂0 previews)"] = b.ddrm(schedule, case, 100, 1.0)
    out["DDRM 100 steps, η 0.85, grid power 2 (x̂0 previews)"] = b.ddrm(schedule, case, 100, 0.85, 2.0)
    out["envelope: best DDRM run of exactly n steps (η .85 or 1, grid power 1 or 2)"] = b.envelope(schedule, case)
    return out


def table_main(b: Bench, schedule: str) -> None:
    def ratio(v: float) -> str:
        return f"{v:.2g}" if v < 100 else f"{v:.0f}"

    for case in CASES:
        op, sigma_y = b.cases[case]
        fd_floor, res_post = b.floor(case)
        print(f"\n#### {schedule}, {case} ({op!r}, σ_y {sigma_y:g}): FD to the exact posterior (residual ratio); "
              f"{b.n} exact posterior samples: {fd_floor:.3f} ({res_post:.2f})\n")
        print(header("method"))
        for name, c in methods(b, schedule, case).items():
            print(f"| {name} | " + " | ".join(f"{at(c, n):.3g} ({ratio(at(c, n, 1))})" for n in CHECKPOINTS) + " |")


def bar(b: Bench, spec, schedules=SCHEDULES) -> dict:
    """The issue's quality bar for one nested configuration."""
    early = [n for n in CHECKPOINTS if n <= 20]
    out = {"early": {}, "final": {}, "final_best": {}, "residual": {}}
    for s in schedules:
        for case in CASES:
            c, v = b.nested(s, case, spec), b.ddrm(s, case, 100)
            for n in early:
                out["early"].setdefault((s, n), []).append(at(v, n) / at(c, n))
            out["final"].setdefault(s, []).append(at(c, 100) / at(v, 100))
            out["final_best"].setdefault(s, []).append(at(c, 100) / b.envelope(s, case)[100][0])
            out["residual"].setdefault(s, []).extend(v[1] for v in c.values())
    return out


def table_search(b: Bench) -> None:
    print(f"\n### Candidates ({b.n} samples; geometric means over the three cases; DDRM = 100 steps η .85)\n")
    print("| candidate | " + " | ".join(f"{s}: ×10 / ×20 / final" for s in SCHEDULES)
          + " | worst early | worst final | residual ratios: all frames / finals |")
    print("|---|" + "---|" * (len(SCHEDULES) + 3))
    for spec in CANDIDATES + [PSC]:
        r = bar(b, spec)
        cells, worst_early, worst_final = [], math.inf, 0.0
        for s in SCHEDULES:
            e10, e20, fin = geo(r["early"][(s, 10)]), geo(r["early"][(s, 20)]), geo(r["final"][s])
            worst_early, worst_final = min(worst_early, e10, e20), max(worst_final, fin)
            cells.append(f"{e10:.1f} / {e20:.1f} / {fin:.2f}")
        residuals = [v for s in SCHEDULES for v in r["residual"][s]]
        finals = [b.nested(s, c, spec)[100][1] for s in SCHEDULES for c in CASES]
        print(f"| {nested_name(spec)} | " + " | ".join(cells) + f" | {worst_early:.1f}× | {worst_final:.2f}× "
              f"| {min(residuals):.2f}–{max(residuals):.1f} / {min(finals):.2f}–{max(finals):.2f} |")
    print("\n×10 / ×20: DDRM preview FD ÷ nested FD at 10 / 20 NFEs (bar ≥ 5); final: nested FD ÷ DDRM FD at 100 "
          "NFEs (bar ≤ 1).")


def table_summary(b: Bench) -> None:
    r = bar(b, CANDIDATES[0])
    print(f"\n### The default ({nested_name(CANDIDATES[0])}) against the bar, {b.n} samples\n")
    print("| schedule | ×DDRM previews at 10 NFE (geo. mean; per case) | at 20 NFE | final ÷ DDRM final (geo.; per case) "
          "| final ÷ best DDRM-100 | residual ratio over all frames (min–max) | final residual ratios |")
    print("|---|---|---|---|---|---|---|")
    for s in SCHEDULES:
        def cell(v):
            return f"**{geo(v):.1f}×** ({', '.join(f'{x:.1f}' for x in v)})"
        finals = [b.nested(s, c, CANDIDATES[0])[100][1] for c in CASES]
        print(f"| {s} | {cell(r['early'][(s, 10)])} | {cell(r['early'][(s, 20)])} | **{geo(r['final'][s]):.2f}×** "
              f"({', '.join(f'{x:.2f}' for x in r['final'][s])}) | {geo(r['final_best'][s]):.2f}× "
              f"| {min(r['residual'][s]):.2f}–{max(r['residual'][s]):.1f} "
              f"| {', '.join(f'{x:.2f}' for x in finals)} |")
    all10 = [v for s in SCHEDULES for v in r["early"][(s, 10)]]
    all20 = [v for s in SCHEDULES for v in r["early"][(s, 20)]]
    allf = [v for s in SCHEDULES for v in r["final"][s]]
    print(f"| all nine | **{geo(all10):.1f}×** | **{geo(all20):.1f}×** | **{geo(allf):.2f}×** | | | |")
    print("\nCases in order: " + ", ".join(CASES) + ". Noise floors (FD of exact posterior samples) / the exact "
          "posterior's residual ratio: " + ", ".join(f"{c} {b.floor(c)[0]:.3f} / {b.floor(c)[1]:.2f}" for c in CASES))


def main() -> None:
    args = parse_args(__doc__, ("main", "search", "summary"), "benchmarks/results/restore_oracle.json")
    b = Bench(args.num_samples, args.cache)
    # compute everything first (progress bar), then print
    work = [(s, c) for s in SCHEDULES for c in CASES]
    for s, c in tqdm(work, desc="schedule × case"):
        methods(b, s, c)
        for spec in CANDIDATES:
            b.nested(s, c, spec)
        b.floor(c)
    tables = ("summary", "search", "main") if args.table == "all" else (args.table,)
    for t in tables:
        if t == "main":
            for s in ([args.schedule] if args.schedule else SCHEDULES):
                table_main(b, s)
        elif t == "search":
            table_search(b)
        else:
            table_summary(b)


if __name__ == "__main__":
    main()
