#!/usr/bin/env python
"""Rejected designs of issue 12, kept reproducible (they are not options of the library).

1. A higher-order outer update: DPM-Solver++(2M)-style multistep outer steps that use the last two
   inner outputs as data predictions, D = x̂0'_k + (x̂0'_k - x̂0'_{k-1}) h_k / (2 h_{k-1}), with an
   outer η (0: the ODE form, 1: the SDE form, which at first order is the paper's DDIM η = 1 step).
   Why it cannot help: with η_outer = 1 the first-order outer step is *exact* for any step size when
   x̂0' is a sample of p(x0 | x_τ) (it draws x_τ' from q(x_τ' | x_τ, x0) with x0 ~ p(x0 | x_τ)), so
   there is no outer discretisation error to cancel; the difference of two *samples* is noise, and
   the correction adds its variance (×(h/2h_prev)²) on top of the SDE's own.
2. Inner grids uniform in log-SNR (DPM-Solver's recommendation for pixel models; diffusers'
   ``use_lu_lambdas``): a 10-step inner run then reaches FD 0.08 on the linear schedule where the
   trailing grid reaches 0.34, but its coarse structure is worse and the renoised later frames
   inherit it (and a log-SNR grid helps a separate exact-N run just as much: the envelope moves too).

    python benchmarks/anytime_experiments.py            # ~5 CPU-min; prints Markdown tables

Same oracle, seeds and FD as ``gmm_quality.py`` would use are *not* guaranteed here (this script
draws its own noise: 2,000 samples, one batch, seed 0), so compare rows within this script only.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from nested_diffusion.samplers import make_sampler, randn_like, sample
from nested_diffusion.schedules import make_alphas_cumprod, spaced_timesteps
from nested_diffusion.testing import GaussianMixture

CHECKPOINTS = (10, 20, 30, 50, 75, 100)
ENVELOPE = (("ddim", 0.0), ("ddim", 1.0), ("dpmpp-2m", 0.0), ("dpmpp-2m", 1.0))


def logsnr_timesteps(start: int, steps: int, a: list[float]) -> list[int]:
    """``steps`` timesteps from ``start`` down to 0, uniform in λ = log(α/σ), deduplicated."""
    lam = np.array([0.5 * math.log(v / (1 - v)) for v in a])
    out: list[int] = []
    for target in np.linspace(lam[start], lam[0], steps):
        t = int(np.argmin(abs(lam - target)))
        if not out or t < out[-1]:
            out.append(t)
    return out


class Oracle:
    def __init__(self, schedule: str, n: int = 2000, seed: int = 0) -> None:
        self.gmm = GaussianMixture.from_digits()
        self.a = make_alphas_cumprod(schedule).tolist()
        self.noise = torch.randn(n, self.gmm.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.nfe = 0

    def denoise(self, x: torch.Tensor, t: int) -> torch.Tensor:
        self.nfe += 1
        return self.gmm.denoise(x, self.a[t])

    def fd(self, x: torch.Tensor) -> float:
        return self.gmm.frechet_distance(x)

    def envelope(self, grid=spaced_timesteps) -> dict[int, float]:
        out = {}
        for n in CHECKPOINTS:
            g = grid(len(self.a) - 1, n) if grid is spaced_timesteps else grid(len(self.a) - 1, n, self.a)
            out[n] = min(self.fd(sample(self.denoise, self.noise, g, self.a, make_sampler(s, e),
                                        torch.Generator().manual_seed(1))) for s, e in ENVELOPE)
        return out


def nested_2m_outer(o: Oracle, outer: list[int], inner: list[int], eta_in: float, eta_out: float,
                    order2: bool) -> list[tuple[int, float]]:
    """Nested diffusion whose outer step is DPM-Solver++(2M) (SDE form with η_out) over inner samples."""
    gen, x, frames, prev, o.nfe = torch.Generator().manual_seed(1), o.noise, [], None, 0
    for k, tau in enumerate(outer):
        d = sample(o.denoise, x, spaced_timesteps(tau, inner[k]), o.a, make_sampler("dpmpp-2m", eta_in), gen)
        frames.append((o.nfe, o.fd(d)))
        if k + 1 == len(outer):
            break
        ab, abn = o.a[tau], o.a[outer[k + 1]]
        h = 0.5 * math.log(abn / (1 - abn)) - 0.5 * math.log(ab / (1 - ab))
        dd = d if not (order2 and prev is not None) else d + (d - prev[0]) * (h / (2 * prev[1]))
        x = (math.sqrt((1 - abn) / (1 - ab)) * math.exp(-eta_out * h)) * x - math.sqrt(abn) * math.expm1(
            -(1 + eta_out) * h) * dd
        if eta_out > 0:
            x = x + math.sqrt(1 - abn) * math.sqrt(-math.expm1(-2 * eta_out * h)) * randn_like(x, gen)
        prev = (d, h)
    return frames


def nested_logsnr_inner(o: Oracle, outer: list[int], inner: list[int], etas: list[float]) -> list[tuple[int, float]]:
    """The default's renoising layout with inner grids uniform in log-SNR."""
    gen, x, frames, o.nfe = torch.Generator().manual_seed(1), o.noise, [], 0
    for k, tau in enumerate(outer):
        d = sample(o.denoise, x, logsnr_timesteps(tau, inner[k], o.a), o.a, make_sampler("dpmpp-2m", etas[k]), gen)
        frames.append((o.nfe, o.fd(d)))
        if k + 1 < len(outer):
            abn = o.a[outer[k + 1]]
            x = math.sqrt(abn) * d + math.sqrt(1 - abn) * randn_like(d, gen)
    return frames


def worst(frames, env) -> float:
    held = lambda c: [f for n, f in frames if n <= c][-1] if any(n <= c for n, _ in frames) else math.inf  # noqa: E731
    return max(held(c) / env[c] for c in CHECKPOINTS if c >= 20)


def main() -> None:
    from nested_diffusion.planner import plan_layout

    print("\n### Higher-order (2M) outer update, uniform outer grid, DPM++(2M) inner η .85: worst FD / envelope "
          "at >= 20 NFEs / final FD\n")
    print("| layout | schedule | 1st order η_out 1 (paper) | 2M η_out 1 | 2M η_out 0.5 | 2M η_out 0 |\n|---|---|---|---|---|---|")
    for schedule in ("linear", "scaled_linear", "cosine"):
        o = Oracle(schedule)
        env = o.envelope()
        for K, M in ((10, 10), (20, 5)):
            outer = spaced_timesteps(999, K)
            cells = []
            for order2, eta_out in ((False, 1.0), (True, 1.0), (True, 0.5), (True, 0.0)):
                fr = nested_2m_outer(o, outer, [M] * K, 0.85, eta_out, order2)
                cells.append(f"{worst(fr, env):.2f} / {fr[-1][1]:.3f}")
            print(f"| {K}×{M} | {schedule} | " + " | ".join(cells) + " |", flush=True)

    print("\n### Inner grids uniform in log-SNR vs the trailing grid (the default layout otherwise): "
          "worst FD / envelope at >= 20 NFEs (trailing-grid envelope; log-SNR-grid envelope) / final FD\n")
    print("| schedule | trailing inner grid | log-SNR inner grid | envelope FD at 10/20/30 NFEs, trailing → log-SNR grid |")
    print("|---|---|---|---|")
    for schedule in ("linear", "scaled_linear", "cosine"):
        o = Oracle(schedule)
        layout = plan_layout(100, make_alphas_cumprod(schedule))
        env, env_l = o.envelope(), o.envelope(logsnr_timesteps)
        gen, x, frames, o.nfe = torch.Generator().manual_seed(1), o.noise, [], 0
        for k, tau in enumerate(layout.outer_timesteps):  # the default, trailing grids
            d = sample(o.denoise, x, spaced_timesteps(tau, layout.inner_steps[k]), o.a,
                       make_sampler("dpmpp-2m", layout.inner_eta), gen)
            frames.append((o.nfe, o.fd(d)))
            if k + 1 < len(layout.outer_timesteps):
                abn = o.a[layout.outer_timesteps[k + 1]]
                x = math.sqrt(abn) * d + math.sqrt(1 - abn) * randn_like(d, gen)
        logsnr = nested_logsnr_inner(o, layout.outer_timesteps, layout.inner_steps,
                                     [layout.inner_eta] * len(layout.inner_steps))
        print(f"| {schedule} | {worst(frames, env):.2f} ({worst(frames, env_l):.2f}) / {frames[-1][1]:.3f} | "
              f"{worst(logsnr, env):.2f} ({worst(logsnr, env_l):.2f}) / {logsnr[-1][1]:.3f} | "
              + " / ".join(f"{env[c]:.3f}" for c in (10, 20, 30)) + " → "
              + " / ".join(f"{env_l[c]:.3f}" for c in (10, 20, 30)) + " |", flush=True)


if __name__ == "__main__":
    main()
