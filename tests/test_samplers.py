"""Parity of our samplers with diffusers' schedulers on identical timesteps and noise."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from nested_diffusion.samplers import iterate, make_sampler, sample
from nested_diffusion import make_denoiser
from nested_diffusion.schedules import spaced_timesteps

from kdiffusion_reference import run_on_levels, sample_dpmpp_2m_sde, sample_dpmpp_3m_sde


def diffusers_run(scheduler, model, x, timesteps, seed, eta=None):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    xs = []
    for t in timesteps:
        out = model(x, torch.full((len(x),), t))
        kw = {"eta": eta} if eta is not None else {}
        kw.update(generator=g) if g is not None else None
        x = scheduler.step(out, t, x, **kw).prev_sample
        xs.append(x)
    return xs


def ours(model, x, timesteps, ac, pred, sampler, seed):
    g = torch.Generator().manual_seed(seed)
    a = ac.double().tolist()
    return [xn for _, _, xn in iterate(make_denoiser(model, ac, pred), x, timesteps, a, sampler, g)]


def assert_trajectories_close(a, b, atol=1e-5):
    assert len(a) == len(b)
    for i, (u, v) in enumerate(zip(a, b)):  # float32: measured ≤ 3e-6 on multistep runs
        torch.testing.assert_close(u, v, rtol=1e-5, atol=atol, msg=f"step {i}")


@pytest.fixture
def x_start():
    return torch.randn(16, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("eta", [0.0, 0.5, 0.85])
@pytest.mark.parametrize("steps", [1, 10, 25])
def test_ddim_matches_diffusers_ddim(gmm, x_start, eta, steps):
    s = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="trailing",
                      clip_sample=False, set_alpha_to_one=True)
    s.set_timesteps(steps)
    grid = spaced_timesteps(999, steps)
    assert grid == s.timesteps.tolist()
    model = gmm.model(s.alphas_cumprod, "epsilon")
    ref = diffusers_run(s, model, x_start, grid, 3, eta=eta)
    got = ours(model, x_start, grid, s.alphas_cumprod, "epsilon", make_sampler("ddim", eta), 3)
    # one step from T-1 is x̂0 = (x - σ ε̂)/α with α = 0.006: float32 rounding of α, ×160 (measured 7.5e-5)
    assert_trajectories_close(got, ref, atol=1e-4 if steps == 1 else 1e-5)


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("start,steps", [(999, 10), (537, 7), (120, 4)])
def test_ddpm_is_ddim_eta_one(gmm, x_start, pred, start, steps):
    """DDPM ancestral sampling on custom (inner) timesteps equals DDIM with η = 1."""
    s = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                      beta_end=0.012, clip_sample=False, prediction_type=pred)
    grid = spaced_timesteps(start, steps)
    s.set_timesteps(timesteps=grid)
    model = gmm.model(s.alphas_cumprod, pred)
    ref = diffusers_run(s, model, x_start, grid, 5)
    for name in ("ddpm", "ddim"):
        got = ours(model, x_start, grid, s.alphas_cumprod, pred, make_sampler(name, 1.0), 5)
        assert_trajectories_close(got, ref)


@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("start,steps", [(999, 10), (999, 30), (400, 6)])
def test_dpmpp_2m_matches_diffusers(gmm, x_start, sde, pred, start, steps):
    s = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", solver_order=2,
                                    algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++",
                                    final_sigmas_type="zero", prediction_type=pred)
    grid = spaced_timesteps(start, steps)
    s.set_timesteps(timesteps=grid)
    model = gmm.model(s.alphas_cumprod, pred)
    ref = diffusers_run(s, model, x_start, grid, 7)
    sampler = make_sampler("dpmpp-2m-sde" if sde else "dpmpp-2m")
    assert sampler.eta == (1.0 if sde else 0.0)
    got = ours(model, x_start, grid, s.alphas_cumprod, pred, sampler, 7)
    assert_trajectories_close(got, ref)


def test_sample_returns_last_denoised(gmm, linear, x_start):
    """Every sampler ends on ᾱ = 1, so the sample is the last x̂0 (no residual noise)."""
    model = gmm.model(linear, "epsilon")
    a = linear.tolist()
    grid = spaced_timesteps(999, 5)
    denoise = make_denoiser(model, linear, "epsilon")
    for name in ("ddim", "ddpm", "dpmpp-2m", "dpmpp-2m-sde", "dpmpp-3m", "dpmpp-3m-sde", "unipc"):
        steps = list(iterate(denoise, x_start, grid, a, make_sampler(name), torch.Generator().manual_seed(0)))
        assert torch.equal(steps[-1][1], steps[-1][2])
        x = sample(denoise, x_start, grid, a, make_sampler(name), torch.Generator().manual_seed(0))
        assert torch.equal(x, steps[-1][2])


def test_make_sampler_errors():
    with pytest.raises(ValueError, match="sampler must be one of"):
        make_sampler("euler")
    with pytest.raises(ValueError, match=r"eta must lie in \[0, 1\]"):
        make_sampler("ddim", 1.5)
    with pytest.raises(ValueError, match="fixes eta"):
        make_sampler("ddpm", 0.3)
    with pytest.raises(TypeError, match="eta"):
        make_sampler("ddim", "0.5")


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("start,steps", [(999, 15), (999, 40), (700, 16)])
def test_dpmpp_3m_matches_diffusers(gmm, x_start, pred, start, steps):
    """Third-order multistep, η = 0. From 15 steps on, diffusers stays third order until the final
    (first-order, to σ = 0) step, as ours does; its ``solver_type="heun"`` warm-up is k-diffusion's."""
    s = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", solver_order=3,
                                    algorithm_type="dpmsolver++", final_sigmas_type="zero", prediction_type=pred,
                                    solver_type="heun")
    grid = spaced_timesteps(start, steps)
    s.set_timesteps(timesteps=grid)
    model = gmm.model(s.alphas_cumprod, pred)
    ref = diffusers_run(s, model, x_start, grid, 7)
    got = ours(model, x_start, grid, s.alphas_cumprod, pred, make_sampler("dpmpp-3m"), 7)
    assert_trajectories_close(got, ref)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine", "flow-dpm"])
@pytest.mark.parametrize("eta", [0.3, 0.85, 1.0])
def test_dpmpp_2m_sde_matches_kdiffusion_verbatim(gmm, schedule_name, eta):
    """Full runs of DPM-Solver++(2M) at η (0.85: the inner default) against k-diffusion's own
    ``sample_dpmpp_2m_sde``, ported verbatim (tests/kdiffusion_reference.py), to float64 precision."""
    schedule, grid = _grid(schedule_name, 25)
    denoise = make_denoiser(gmm.model(schedule), schedule)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref, ref_denoised = run_on_levels(sample_dpmpp_2m_sde, denoise, x, grid, schedule,
                                      torch.Generator().manual_seed(4), eta=eta)
    steps = list(iterate(denoise, x, grid, schedule, make_sampler("dpmpp-2m", eta), torch.Generator().manual_seed(4)))
    for (_, d, _), d_ref in zip(steps, ref_denoised):
        torch.testing.assert_close(d, d_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(steps[-1][2], ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("schedule_name", ["linear", "cosine", "flow-dpm"])
@pytest.mark.parametrize("eta", [0.0, 0.3, 0.5, 0.85, 1.0])
def test_dpmpp_3m_sde_matches_kdiffusion_verbatim(gmm, schedule_name, eta):
    """Full runs of DPM-Solver++(3M), warm-up included, against k-diffusion's ``sample_dpmpp_3m_sde``
    ported verbatim, to float64 precision (η = 1 is "dpmpp-3m-sde")."""
    schedule, grid = _grid(schedule_name, 12)
    denoise = make_denoiser(gmm.model(schedule), schedule)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref, ref_denoised = run_on_levels(sample_dpmpp_3m_sde, denoise, x, grid, schedule,
                                      torch.Generator().manual_seed(4), eta=eta)
    name = "dpmpp-3m-sde" if eta == 1.0 else "dpmpp-3m"
    steps = list(iterate(denoise, x, grid, schedule, make_sampler(name, eta), torch.Generator().manual_seed(4)))
    for (_, d, _), d_ref in zip(steps, ref_denoised):
        torch.testing.assert_close(d, d_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(steps[-1][2], ref, rtol=1e-9, atol=1e-9)


def _grid(name, steps):
    """A schedule and its vanilla grid: VP tables, or Sana's flow grid (which starts below σ = 1)."""
    from nested_diffusion.schedules import DiscreteVP, flow_matching, make_alphas_cumprod

    if name == "flow-dpm":
        schedule = flow_matching(3.0, spacing="dpmsolver")
    else:
        schedule = DiscreteVP(make_alphas_cumprod(name))
    return schedule, schedule.timesteps(steps)


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_make_denoiser_returns_the_exact_posterior_mean(gmm, linear, pred):
    """The GMM "network" outputs the exact target of each prediction type, so the denoiser built on
    it must return E[x0 | x_t] itself, and read model_kwargs at call time."""
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kwargs = {}
    denoise = make_denoiser(gmm.model(linear, pred), linear, pred, kwargs)
    torch.testing.assert_close(denoise(x, 500), gmm.denoise(x, linear[500]), rtol=1e-9, atol=1e-9)
    kwargs["class_labels"] = torch.tensor([3])
    torch.testing.assert_close(denoise(x, 500), gmm.denoise(x, linear[500], torch.tensor([3])), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="prediction_type"):
        make_denoiser(gmm.model(linear), linear, "x0")
    with pytest.raises(ValueError, match="expected the input's shape"):
        make_denoiser(lambda x, t: x[:1], linear)(x, 10)


# -- UniPC (bh2, order 2): diffusers' UniPCMultistepScheduler default ------------------------------------------
def _unipc(schedule_name, pred, **config):
    from diffusers import UniPCMultistepScheduler

    betas = {"linear": dict(beta_schedule="linear"),
             "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
             "cosine": dict(beta_schedule="squaredcos_cap_v2")}[schedule_name]
    return UniPCMultistepScheduler(num_train_timesteps=1000, prediction_type=pred, timestep_spacing="trailing",
                                   **betas, **config)


# ε-prediction at the top of a schedule (ᾱ_999 = 4e-5 linear, 2e-9 cosine) turns float32 rounding of
# diffusers' σ table into x̂0 errors of 1e-4 (linear, one step) to 1e-1 (cosine): those cases are left to v
# and x0 prediction, which carry the same sampler arithmetic
UNIPC_CASES = [(sched, pred, steps) for sched in ("linear", "scaled_linear", "cosine")
               for pred in ("epsilon", "v_prediction", "sample") for steps in (1, 2, 3, 5, 10, 25)
               if not (pred == "epsilon" and (sched == "cosine" or steps == 1))]


@pytest.mark.parametrize("schedule_name, pred, steps", UNIPC_CASES)
def test_unipc_matches_diffusers(gmm, x_start, schedule_name, pred, steps):
    """Step by step, predictor outputs equal diffusers' (its default: order 2, bh2, corrector on, lower order
    at the last step), on the trailing grid; the corrector reuses the next step's call (one NFE per step)."""
    from nested_diffusion.schedules import DiscreteVP

    s = _unipc(schedule_name, pred)
    assert s.config.solver_type == "bh2" and s.config.solver_order == 2 and s.config.predict_x0
    s.set_timesteps(steps)
    schedule = DiscreteVP(s.alphas_cumprod)
    grid = schedule.timesteps(steps)
    assert grid == s.timesteps.tolist()
    model = gmm.model(s.alphas_cumprod, pred)
    ref = diffusers_run(s, model, x_start, grid, None)  # deterministic: no generator
    calls = []
    denoise = make_denoiser(model, schedule, pred)
    got = [xn for _, _, xn in iterate(lambda x, t: calls.append(t) or denoise(x, t), x_start, grid, schedule,
                                      make_sampler("unipc"), None)]
    assert len(calls) == steps
    assert_trajectories_close(got, ref)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [4, 12])
def test_unipc_matches_diffusers_on_flow_sigmas(gmm, shift, steps):
    """On diffusers' flow grid (use_flow_sigmas, flow_prediction; its first σ is 1 - 1e-6, which we pass as
    the first model time), step by step."""
    from nested_diffusion.samplers import UniPC
    from nested_diffusion.schedules import flow_matching

    from diffusers import UniPCMultistepScheduler

    s = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction")
    s.set_timesteps(steps)
    schedule = flow_matching(shift)
    times = [float(v) * 1000 for v in s.sigmas[:-1].double().tolist()]
    model = gmm.model(schedule)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref, y = [], x.float()
    for i, t in enumerate(s.timesteps):
        out = model(y, torch.full((len(y),), times[i], dtype=torch.float32))
        y = s.step(out, t, y).prev_sample
        ref.append(y)
    got = [xn for _, _, xn in iterate(make_denoiser(model, schedule), x.float(), times, schedule, UniPC())]
    for i, (a, b) in enumerate(zip(got, ref)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=2e-5, msg=f"step {i}")


def test_unipc_from_pure_noise_and_fixed_eta(gmm):
    """From σ = 1 on a flow schedule (λ = -∞) every step is finite: the infinite first step's difference
    quotients vanish; 6 steps on Flux's trailing grid beat Euler's (2,000 samples: FD 0.97 vs 1.79); η is
    fixed at 0."""
    from nested_diffusion import vanilla_sample
    from nested_diffusion.schedules import flow_matching

    schedule = flow_matching(3.0, spacing="trailing")
    x = torch.randn(500, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    frames = list(vanilla_sample(gmm.model(schedule), schedule, x, steps=6, sampler="unipc", eta=None))
    assert all(torch.isfinite(f.image).all() for f in frames) and frames[-1].nfe == 6
    euler = vanilla_sample(gmm.model(schedule), schedule, x, steps=6, sampler="ddim", eta=0.0).run().image
    assert gmm.frechet_distance(frames[-1].image) < 0.6 * gmm.frechet_distance(euler)
    with pytest.raises(ValueError, match="fixes eta = 0.0 \\(it is deterministic\\)"):
        make_sampler("unipc", 0.5)


def test_unipc_carry_follows_a_fork_and_inner_runs(gmm, linear):
    """The corrector's history is per image: a vanilla run forked mid-way onto rows (2, 0) continues as those
    rows of the whole run; as an inner sampler each run starts afresh (costs its grid length)."""
    from nested_diffusion import nested_sample, vanilla_sample

    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    whole = vanilla_sample(gmm.model(linear), linear, x, steps=8, sampler="unipc", eta=None)
    final = whole.run().image
    part = vanilla_sample(gmm.model(linear), linear, x, steps=8, sampler="unipc", eta=None)
    part.run(max_nfe=3)
    child = part.fork(indices=[2, 0])
    torch.testing.assert_close(child.run().image, final[[2, 0]], rtol=1e-9, atol=1e-12)
    session = nested_sample(gmm.model(linear), linear, x, outer_steps=3, inner_steps=[4, 3, 5], inner_sampler="unipc",
                            outer_update="renoise", outer_timesteps=[999, 300, 100], generator=torch.Generator().manual_seed(0))
    assert [f.nfe for f in session] == [4, 7, 12]
