#!/usr/bin/env python
"""Inpainting against the exact posterior (issue 20, part 5): latent blending vs DDRM on the Gaussian-mixture
oracle treated as a latent model with an identity "VAE".

The 8×8-digits mixture (d = 64) is the prior of 1×8×8 "latents"; :class:`IdentityVAEOracle` is a latent
family for :class:`~nested_diffusion.NestedPipeline` whose network is the mixture's exact denoiser and whose VAE
is the identity, so the pipeline's own edit path runs on it: ``NestedPipeline.vanilla(image=, mask_image=)``
(diffusers' ``StableDiffusionInpaintPipeline`` for a 4-channel UNet: strength 1 starts from pure noise, the known
latents re-noised with the same initial noise after every step) and ``NestedPipeline.anytime(image=,
mask_image=, budget=)`` (nested blending: the planned default, every inner and outer step blended). DDRM and
nested DDRM are the restoration module's ``ddrm_sample`` and ``nested_restore`` on the same network, noise and
per-sample generators, with H = "keep the observed coordinates" and σ_y = 0.

The target is exact: for the noiseless observation x0[o] = y the posterior is again a Gaussian mixture
(:class:`InpaintingPosterior`, Gaussian conditioning per component), so "FD" is the Fréchet distance of a
method's samples (all 64 coordinates) to the posterior's closed-form mean and covariance, and "RMS" the
root-mean-square error on the known coordinates, √mean (x[o] - y)² (0 for exact posterior samples), and the
class-weight distance how far the share of each digit class drawn is from the posterior's class weights
(:meth:`InpaintingPosterior.class_distance`). The floor is the same scores for as many exact posterior samples. Sample i of every method draws its initial noise and
its step noise from its own generator (seed ``--seed`` + i), as diffusers does with a list of generators.

    python benchmarks/inpaint_oracle.py --schedules scaled-linear flow-shift3 --long 0     # §13.1 (~20 min)
    python benchmarks/inpaint_oracle.py --num-samples 10000 --schedules scaled-linear flow-shift3 \
        --cases random-half:0 bottom-three-quarters:1 --budgets 100 --long 0               # §13.2 (~47 min)
    python benchmarks/inpaint_oracle.py --shares --schedules scaled-linear --cases bottom-three-quarters:1 --budgets 100

(BENCHMARKS.md §13 has every command; the defaults — three schedules, three cases, 1,000-step vanilla runs —
take about 1.5 h on one core.)

Results are cached per run in ``--cache`` (JSON) and printed as Markdown tables for BENCHMARKS.md §13.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from nested_diffusion import NestedPipeline
from nested_diffusion.planner import plan_schedule
from nested_diffusion.restoration import Inpainting, ddrm_sample, nested_restore
from nested_diffusion.samplers.noise import randn_like
from nested_diffusion.schedules import Schedule, as_schedule, flow_matching, make_alphas_cumprod
from nested_diffusion.testing import GaussianMixture

SHAPE = (1, 8, 8)
#: a VP schedule (Stable Diffusion 1.x/2.x and SDXL's) and flow matching (SD3's shift 3; Flux-like shift 1)
SCHEDULES: dict[str, Callable[[], Schedule]] = {
    "scaled-linear": lambda: as_schedule(make_alphas_cumprod("scaled_linear")),
    "flow-shift1": lambda: flow_matching(1.0),
    "flow-shift3": lambda: flow_matching(3.0),
}
MASKS = ("random-half", "top-half", "bottom-three-quarters")  # what is repainted
#: (mask, ground-truth seed): with half the coordinates known the digit's class is certain (weight ≥ 0.999);
#: truth 1 with only the top two rows known leaves five classes above 2 % (0.38, 0.34, 0.11, 0.09, 0.05)
CASES = ("random-half:0", "top-half:0", "bottom-three-quarters:1")
BUDGETS = (10, 20, 50, 100)
METHODS = ("vanilla-eta0", "vanilla-eta1", "nested-blend", "ddrm", "nested-ddrm")
LABELS = {
    "vanilla-eta0": "vanilla blending, DDIM η 0 (diffusers' inpaint pipeline)",
    "vanilla-eta1": "vanilla blending, DDIM η 1",
    "nested-blend": "nested blending (planned default)",
    "ddrm": "DDRM (η 0.85)",
    "nested-ddrm": "nested DDRM (default layout)",
}


# -- the oracle as a latent model ---------------------------------------------------------------------
class IdentityVAEOracle:
    """A latent pipeline family whose network is ``gmm``'s exact denoiser on ``schedule`` and whose VAE is the
    identity: an image in [0, 1] (gray, 8×8; RGB is averaged) is the latent 2·p - 1, nothing is drawn when
    encoding. Only what :class:`~nested_diffusion.NestedPipeline` asks of a family is here; it is unconditional."""

    family = "gmm-identity-vae"
    pixel_space = False  # a latent model: the pipeline blends the known region instead of running DDRM
    extra_channels = 0
    num_classes = None
    default_guidance = 1.0
    channels = SHAPE[0]

    def __init__(self, gmm: GaussianMixture, schedule: Schedule) -> None:
        self.schedule = as_schedule(schedule)
        self.prediction_type = self.schedule.default_prediction_type
        self.network = gmm.model(self.schedule, self.prediction_type)
        self.device, self.dtype = torch.device("cpu"), torch.float64

    def schedule_for(self, height: int | None = None, width: int | None = None) -> Schedule:
        return self.schedule

    def condition(self, num_images: int, *, prompt: Any = None, negative_prompt: Any = None, class_labels: Any = None,
                  guidance_scale: float | None = None) -> dict[str, Any]:
        if any(v is not None for v in (prompt, negative_prompt, class_labels, guidance_scale)):
            raise ValueError("the identity-VAE oracle is unconditional: no prompt, class_labels or guidance_scale")
        return {}

    def latent_shape(self, num_images: int, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        if (height or SHAPE[1], width or SHAPE[2]) != SHAPE[1:]:
            raise ValueError(f"the oracle's images are {SHAPE[2]}×{SHAPE[1]}, got {width}×{height}")
        return (num_images, *SHAPE)

    def initial_noise(self, num_images: int, generator: Any, height: int | None = None,
                      width: int | None = None) -> torch.Tensor:
        return randn_like(torch.empty(self.latent_shape(num_images, height, width), dtype=self.dtype), generator)

    def preprocess(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return image.to(self.dtype).mean(1, keepdim=True) * 2 - 1  # exact for three equal float32 channels

    def preprocess_mask(self, mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return (mask >= 0.5).to(torch.float32)

    def latent_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.to(self.dtype)

    def encode(self, pixels: torch.Tensor, generator: Any = None, sample: bool = True) -> torch.Tensor:
        return pixels.to(self.dtype)

    def kept_steps(self, num_inference_steps: int, strength: float) -> int:
        return min(int(num_inference_steps * strength), num_inference_steps)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        return self.network(x, t)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return ((x0 + 1) / 2).clamp(0, 1).float()


# -- the exact target ---------------------------------------------------------------------------------
class InpaintingPosterior:
    """p(x0 | x0[o] = y) for a Gaussian-mixture prior: per component k (Bishop 2006, eqs. 2.81–2.82),
    x0[u] | k ~ N(μ_u + Σ_uo Σ_oo⁻¹ (y - μ_o), Σ_uu - Σ_uo Σ_oo⁻¹ Σ_ou) with weight ∝ π_k N(y; μ_o, Σ_oo) — the
    σ_y → 0 limit of :meth:`GaussianMixture.posterior` for ``Inpainting``. ``repainted`` is that mixture on the
    unobserved coordinates u; :meth:`mean` / :meth:`covariance` / :meth:`sample` are over all d coordinates
    (x0[o] = y, with zero variance)."""

    def __init__(self, prior: GaussianMixture, observed: torch.Tensor, y: torch.Tensor) -> None:
        self.observed = torch.as_tensor(observed, dtype=torch.bool).reshape(-1)
        if self.observed.numel() != prior.dim or not 0 < int(self.observed.sum()) < prior.dim:
            raise ValueError(f"observed must mark some but not all of the mixture's {prior.dim} coordinates")
        o, u = self.observed, ~self.observed
        self.y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if self.y.numel() != int(o.sum()):
            raise ValueError(f"y has {self.y.numel()} entries for {int(o.sum())} observed coordinates")
        S = prior.covariances
        S_oo, S_uo, S_uu = S[:, o][:, :, o], S[:, u][:, :, o], S[:, u][:, :, u]
        L = torch.linalg.cholesky(S_oo)
        r = self.y - prior.means[:, o]  # [K, m]
        gain_t = torch.cholesky_solve(S_uo.transpose(1, 2), L)  # Σ_oo⁻¹ Σ_ou: [K, m, d-m]
        means = prior.means[:, u] + torch.einsum("km,kmu->ku", r, gain_t)
        covariances = S_uu - S_uo @ gain_t
        white = torch.linalg.solve_triangular(L, r[..., None], upper=False).squeeze(-1)
        log_w = torch.log(prior.weights) - torch.log(torch.diagonal(L, dim1=1, dim2=2)).sum(1) - 0.5 * (white**2).sum(1)
        self.repainted = GaussianMixture(means, covariances, torch.softmax(log_w, 0))
        self.dim = prior.dim

    def _embed(self, x_u: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(x_u), self.dim, dtype=torch.float64)
        out[:, self.observed], out[:, ~self.observed] = self.y, x_u
        return out

    def mean(self) -> torch.Tensor:
        return self._embed(self.repainted.mean()[None])[0]

    def covariance(self) -> torch.Tensor:
        u = (~self.observed).nonzero().squeeze(1)
        out = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        out[u[:, None], u[None, :]] = self.repainted.covariance()
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` exact posterior samples ``[n, d]``."""
        return self._embed(self.repainted.sample(n, generator)[0])

    def frechet_distance(self, samples: torch.Tensor) -> float:
        """FD of ``samples`` (flattened to [N, d]) to the posterior's exact mean and covariance."""
        from nested_diffusion.metrics import frechet_distance, gaussian_stats

        mu, cov = gaussian_stats(samples.reshape(len(samples), -1))
        return frechet_distance(mu, cov, self.mean().numpy(), self.covariance().numpy())

    def class_shares(self, samples: torch.Tensor) -> torch.Tensor:
        """The samples' mean responsibilities r̄_k = mean p(k | x[u]) under the posterior mixture (for exact
        samples E r̄ = w): how often each digit class (component) is drawn."""
        mix = self.repainted
        x = samples.reshape(len(samples), -1).double()[:, ~self.observed]
        z = torch.linalg.solve_triangular(mix.chol, (x[None] - mix.means[:, None]).transpose(1, 2), upper=False)
        log_p = torch.log(mix.weights) - torch.log(torch.diagonal(mix.chol, dim1=1, dim2=2)).sum(1) \
            - 0.5 * (z**2).sum(1).T  # [N, K]: log π_k N(x[u]; m_k, C_k) + const
        return torch.softmax(log_p, 1).mean(0)

    def class_distance(self, samples: torch.Tensor) -> float:
        """Total variation ½ Σ_k |w_k - r̄_k| between the posterior's class weights and :meth:`class_shares`: is
        each digit class drawn as often as the posterior says?"""
        return float(0.5 * (self.class_shares(samples) - self.repainted.weights).abs().sum())

    def rms(self, samples: torch.Tensor) -> float:
        """√mean (x[o] - y)² over the samples' observed coordinates."""
        return float((samples.reshape(len(samples), -1).double()[:, self.observed] - self.y).pow(2).mean().sqrt())


def repainted_mask(name: str) -> torch.Tensor:
    """The coordinates repainted (True) by a mask, shaped 1×8×8 (diffusers' white)."""
    out = torch.zeros(SHAPE, dtype=torch.bool)
    if name == "random-half":
        flat = out.reshape(-1)
        flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(7))[:flat.numel() // 2]] = True
    elif name == "top-half":
        out[:, :4, :] = True
    elif name == "bottom-three-quarters":
        out[:, 2:, :] = True
    else:
        raise ValueError(f"mask must be one of {MASKS}, got {name!r}")
    return out


class Case:
    """One ground truth (a mixture sample, clipped to [-1, 1] and rounded to a float32 image) and one mask: the
    pipeline's inputs, the restoration operator and the exact posterior."""

    def __init__(self, gmm: GaussianMixture, truth: int, mask: str) -> None:
        x0 = gmm.sample(1, torch.Generator().manual_seed(1000 + truth))[0].reshape(1, *SHAPE).clamp(-1, 1)
        pixels = ((x0 + 1) / 2).float()  # what a user hands the pipeline
        self.image = pixels.expand(1, 3, *SHAPE[1:])  # "RGB": the identity VAE averages it back
        self.latents = pixels.double() * 2 - 1
        repaint = repainted_mask(mask)
        self.mask_image = repaint.float()[None]  # white = repaint
        self.operator = Inpainting(~repaint)
        self.y = self.operator(self.latents)  # [1, m]: the known coordinates, exactly
        self.posterior = InpaintingPosterior(gmm, ~repaint, self.y[0])

    def score(self, x: torch.Tensor) -> list[float]:
        """[FD, RMS on the known coordinates, class-weight distance] (see :class:`InpaintingPosterior`)."""
        p = self.posterior
        return [p.frechet_distance(x), p.rms(x), p.class_distance(x)]


# -- the runs -----------------------------------------------------------------------------------------
class Bench:
    def __init__(self, n: int, seed: int, cache: Path) -> None:
        self.gmm, self.n, self.seed, self.cache_path = GaussianMixture.from_digits(), n, seed, cache
        self.cache = json.loads(cache.read_text()) if cache.exists() else {}
        self._cases: dict[tuple[int, str], Case] = {}
        self._pipes: dict[str, NestedPipeline] = {}

    def case(self, truth: int, mask: str) -> Case:
        if (truth, mask) not in self._cases:
            self._cases[(truth, mask)] = Case(self.gmm, truth, mask)
        return self._cases[(truth, mask)]

    def pipe(self, schedule: str) -> NestedPipeline:
        if schedule not in self._pipes:
            self._pipes[schedule] = NestedPipeline(IdentityVAEOracle(self.gmm, SCHEDULES[schedule]()))
        return self._pipes[schedule]

    def generators(self) -> list[torch.Generator]:
        """One generator per sample (diffusers' list convention): sample i is the same in every method."""
        return [torch.Generator().manual_seed(self.seed + i) for i in range(self.n)]

    def _cached(self, key: str, compute: Callable[[], dict[str, list[float]]]) -> dict[int, list[float]]:
        key = f"n={self.n},seed={self.seed}|{key}"
        if key not in self.cache:
            self.cache[key] = compute()
            tmp = self.cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.cache, indent=0))
            tmp.replace(self.cache_path)
        return {int(k): v for k, v in self.cache[key].items()}

    def session(self, method: str, schedule: str, truth: int, mask: str, budget: int) -> Any:
        """One run of ``method`` with ``budget`` NFEs, through the library's entry points; its frames' images are
        ``frame.latents`` (pipeline sessions) or ``frame.image`` (restoration sessions)."""
        c, pipe = self.case(truth, mask), self.pipe(schedule)
        edit = dict(image=c.image, mask_image=c.mask_image, num_images=self.n, generator=self.generators(),
                    output_type="latent")
        if method.startswith("vanilla"):
            return pipe.vanilla(**edit, num_inference_steps=budget, sampler="ddim", eta=float(method[-1]))
        if method == "nested-blend":
            return pipe.anytime(**edit, budget=budget)
        gens = self.generators()
        noise = pipe.adapter.initial_noise(self.n, gens)  # the pipelines' initial noise: each generator's first draw
        common = dict(operator=c.operator, measurement=c.y.expand(self.n, -1), sigma_y=0.0, generator=gens)
        model, S = pipe.adapter, pipe.adapter.schedule
        if method == "ddrm":
            return ddrm_sample(model, S, noise, **common, steps=budget)
        return nested_restore(model, S, noise, **common, inner_steps=plan_schedule(budget, max_steps=S.max_steps))

    def frames(self, method: str, schedule: str, truth: int, mask: str, budget: int):
        """(nfe, image) for every frame of :meth:`session`."""
        session = self.session(method, schedule, truth, mask, budget)
        edited = getattr(session, "edit", None)
        if edited is not None and not torch.equal(edited.image, self.case(truth, mask).latents.expand(self.n, *SHAPE)):
            raise RuntimeError("the identity VAE changed the known latents")  # the posterior conditions on these
        for f in session:
            yield f.nfe, f.latents if edited is not None else f.image

    def run(self, method: str, schedule: str, truth: int, mask: str, budget: int) -> dict[int, list[float]]:
        """{nfe: score} of every frame of one run with ``budget`` NFEs (the last one is its final)."""
        def compute() -> dict[str, list[float]]:
            c = self.case(truth, mask)
            return {str(nfe): c.score(x) for nfe, x in self.frames(method, schedule, truth, mask, budget)}
        return self._cached(f"{method}|{schedule}|truth={truth}|{mask}|budget={budget}", compute)

    def shares(self, method: str, schedule: str, truth: int, mask: str, budget: int) -> list[float]:
        """The class shares (:meth:`InpaintingPosterior.class_shares`) of the final of one run."""
        def compute() -> dict[str, list[float]]:
            *_, (nfe, x) = self.frames(method, schedule, truth, mask, budget)
            return {str(nfe): self.case(truth, mask).posterior.class_shares(x).tolist()}
        return final(self._cached(f"shares|{method}|{schedule}|truth={truth}|{mask}|budget={budget}", compute))

    def floor(self, truth: int, mask: str) -> list[float]:
        """The scores of n exact posterior samples (the noise floor at this sample count)."""
        def compute() -> dict[str, list[float]]:
            c = self.case(truth, mask)
            return {"0": c.score(c.posterior.sample(self.n, torch.Generator().manual_seed(10**9 + self.seed)))}
        return self._cached(f"posterior|truth={truth}|{mask}", compute)[0]


def final(curve: dict[int, list[float]]) -> list[float]:
    return curve[max(curve)]


def at(curve: dict[int, list[float]], n: int) -> list[float] | None:
    """The last frame with nfe <= n (None before the first)."""
    done = [k for k in curve if k <= n]
    return curve[max(done)] if done else None


def fd(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.3g}"


def cell(v: list[float] | None) -> str:
    """FD (RMS on the known coordinates)."""
    if v is None:
        return "–"
    return f"{fd(v[0])} ({'0' if v[1] == 0 else f'{v[1]:.1g}'})"


def parse_case(text: str) -> tuple[str, int]:
    mask, _, truth = text.partition(":")
    if mask not in MASKS or not truth.isdigit():
        raise argparse.ArgumentTypeError(f"a case is MASK:TRUTH with MASK one of {', '.join(MASKS)}, got {text!r}")
    return mask, int(truth)


def tables(b: Bench, schedules: Sequence[str], cases: Sequence[tuple[str, int]], budgets: Sequence[int],
           long: int) -> str:
    """Per schedule and case: every method's final at every budget and the frames of the largest budget's run."""
    out, top = [], max(budgets)
    for s in schedules:
        for m, t in cases:
            fl = b.floor(t, m)
            w = b.case(t, m).posterior.repainted.weights
            out.append(f"\n#### {s}, {m} repainted (truth {t}; posterior class weights "
                       f"{' / '.join(f'{v:.2f}' for v in w.sort(descending=True).values[:3])} …)\n\n"
                       f"FD to the exact posterior (RMS on the known coordinates); {b.n:,} exact posterior samples: "
                       f"FD {fd(fl[0])}, class-weight distance {fl[2]:.3f}.\n")
            early = budgets[:-1]  # the frames of the largest budget's run at the smaller budgets
            out.append("| method | " + " | ".join(f"{n} NFEs" for n in budgets) + f" | class-weight distance at {top} |"
                       + (f" frames of the {top}-NFE run at {' / '.join(map(str, early))} |" if early else ""))
            out.append("|---|" + "---|" * (len(budgets) + 1 + bool(early)))
            for method in METHODS:
                frames = b.run(method, s, t, m, top)
                finals = [cell(final(b.run(method, s, t, m, n))) for n in budgets]
                anytime = f" {' / '.join(cell(at(frames, n)) for n in early)} |" if early else ""
                out.append(f"| {LABELS[method]} | " + " | ".join(finals) + f" | {final(frames)[2]:.3f} |{anytime}")
            if long:
                for method in ("vanilla-eta0", "vanilla-eta1"):
                    v = final(b.run(method, s, t, m, long))
                    out.append(f"| {LABELS[method]}, {long:,} steps | " + " | ".join("" for _ in early)
                               + f"{' | ' if early else ''}{cell(v)} | {v[2]:.3f} |" + (" |" if early else ""))
    return "\n".join(out)


def summary(b: Bench, schedules: Sequence[str], cases: Sequence[tuple[str, int]], budget: int, long: int) -> str:
    """One line per case: the finals at ``budget`` NFEs in floors (FD ÷ the exact-sample FD at this count)."""
    short = {"vanilla-eta0": "vanilla blend. η 0", "vanilla-eta1": "vanilla blend. η 1",
             "nested-blend": "nested blend.", "ddrm": "DDRM", "nested-ddrm": "nested DDRM"}
    out = [f"\n### Finals at {budget} NFEs, {b.n:,} samples: FD to the exact posterior ÷ the floor (the FD of "
           f"{b.n:,} exact posterior samples); [class-weight distance]\n",
           "| schedule | repainted (truth) | floor | " + " | ".join(short[m] for m in METHODS)
           + (f" | vanilla blend. η 1, {long:,} steps" if long else "") + " | RMS on the known coordinates: DDRM / nested DDRM |",
           "|---|---|---|" + "---|" * len(METHODS) + ("---|" if long else "") + "---|"]
    for s in schedules:
        for m, t in cases:
            fl = b.floor(t, m)
            runs = [final(b.run(method, s, t, m, budget)) for method in METHODS]
            if long:
                runs.append(final(b.run("vanilla-eta1", s, t, m, long)))
            cells = [f"{v[0] / fl[0]:.1f}× [{v[2]:.2f}]" for v in runs]
            rms = " / ".join(f"{v[1]:.1g}" for v in runs[3:5])
            out.append(f"| {s} | {m} ({t}) | {fl[0]:.4f} [{fl[2]:.3f}] | " + " | ".join(cells) + f" | {rms} |")
    return "\n".join(out)


def shares_table(b: Bench, schedules: Sequence[str], cases: Sequence[tuple[str, int]], budget: int) -> str:
    """Per schedule and case: how often each digit class is drawn by each method's final at ``budget`` NFEs."""
    out = []
    for s in schedules:
        for m, t in cases:
            post = b.case(t, m).posterior
            exact = post.class_shares(post.sample(b.n, torch.Generator().manual_seed(10**9 + b.seed)))
            rows = [("exact posterior: class weights", post.repainted.weights), (f"{b.n:,} exact posterior samples", exact)]
            rows += [(LABELS[method], torch.tensor(b.shares(method, s, t, m, budget))) for method in METHODS]
            out.append(f"\n#### {s}, {m} repainted (truth {t}): share of each digit class (mean posterior "
                       f"responsibility) in the finals at {budget} NFEs, {b.n:,} samples\n")
            out.append("| | " + " | ".join(f"“{k}”" for k in range(len(exact))) + " | distance |")
            out.append("|---|" + "---|" * (len(exact) + 1))
            for name, v in rows:
                tv = 0.5 * float((v - post.repainted.weights).abs().sum())
                out.append(f"| {name} | " + " | ".join(f"{x:.2f}" for x in v.tolist()) + f" | {tv:.2f} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--schedules", nargs="+", choices=tuple(SCHEDULES), default=list(SCHEDULES))
    p.add_argument("--cases", nargs="+", type=parse_case, default=[parse_case(c) for c in CASES],
                   help=f"MASK:TRUTH pairs (masks: {', '.join(MASKS)}; TRUTH seeds the ground truth)")
    p.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS), help="NFE budgets (increasing)")
    p.add_argument("--long", type=int, default=1000, help="steps of the long vanilla blending runs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses the generator seeded seed + i")
    p.add_argument("--cache", type=Path, default=Path("benchmarks/results/inpaint_oracle.json"))
    p.add_argument("--shares", action="store_true",
                   help="only the table of digit-class shares in every method's final at the largest budget")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.num_samples < 2:
        p.error("--num-samples must be at least 2")
    if any(n < 1 for n in args.budgets) or list(args.budgets) != sorted(set(args.budgets)):
        p.error("--budgets must be increasing positive NFE counts")
    if args.long < 0 or args.seed < 0:
        p.error("--long and --seed must be >= 0")
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    b = Bench(args.num_samples, args.seed, args.cache)
    if args.shares:
        print(shares_table(b, args.schedules, args.cases, max(args.budgets)))
        return
    work = [(method, s, t, m, n) for s in args.schedules for m, t in args.cases for method in METHODS
            for n in args.budgets]
    work += [(method, s, t, m, args.long) for s in args.schedules for m, t in args.cases
             for method in ("vanilla-eta0", "vanilla-eta1") if args.long]
    for item in tqdm(work, desc="runs"):  # everything first (cached), then the tables
        b.run(*item)
    print(summary(b, args.schedules, args.cases, max(args.budgets), args.long))
    print(tables(b, args.schedules, args.cases, args.budgets, args.long))


if __name__ == "__main__":
    main()
