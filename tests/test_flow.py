"""Flow matching in the core (issue 16): the schedule against diffusers' FlowMatchEulerDiscreteScheduler,
Euler / DPM-Solver++ parity with diffusers' own loops, nested identities, the flow ↔ VP change of variables,
exact NFE accounting on continuous grids, the planner and restoration on flow schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

from nested_diffusion import ddrm_sample, make_denoiser, nested_restore, nested_sample, plan_layout, vanilla_sample
from nested_diffusion.planner import outer_timesteps_at_sigmas, resolve_layout, restart_noise_level
from nested_diffusion.restoration import Inpainting, SuperResolution
from nested_diffusion.samplers import Renoise, iterate, make_sampler
from nested_diffusion.schedules import (DiscreteVP, FlowMatching, Level, calculate_shift, flow_matching,
                                        from_scheduler, to_denoised)
from nested_diffusion.vanilla import VanillaSession

#: (diffusers config, the same schedule here): shift 1 and 3 (SD3), dynamic exponential (Flux) and linear, terminal
CONFIGS = {
    "shift1": (dict(), flow_matching()),
    "shift3": (dict(shift=3.0), flow_matching(3.0)),
    "dynamic": (dict(use_dynamic_shifting=True), flow_matching(use_dynamic_shifting=True, mu=0.8)),
    "dynamic-linear": (dict(use_dynamic_shifting=True, time_shift_type="linear"),
                       flow_matching(use_dynamic_shifting=True, time_shift_type="linear", mu=1.3)),
    "terminal": (dict(shift=3.0, shift_terminal=0.1), flow_matching(3.0, shift_terminal=0.1)),
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def noise(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 64, generator=gen(seed), dtype=torch.float64)


# -- the schedule --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("steps", [2, 4, 28, 50])
def test_grids_are_diffusers_set_timesteps(name, steps):
    config, schedule = CONFIGS[name]
    s = FlowMatchEulerDiscreteScheduler(**config)
    s.set_timesteps(steps, mu=schedule.mu)
    times = schedule.timesteps(steps)
    assert torch.equal(torch.tensor(times, dtype=torch.float32), s.timesteps)  # model times, bit for bit
    assert [schedule.level(t).sigma for t in times] == s.sigmas[:-1].double().tolist()  # σ exactly (float32 values)
    assert all(schedule.level(t) == Level(1 - schedule.level(t).sigma, schedule.level(t).sigma) for t in times)


@pytest.mark.parametrize("mu", [0.5, 0.8, 1.15])
def test_trailing_grid_is_the_flux_pipelines(mu):
    """FluxPipeline passes sigmas = linspace(1, 1/N, N) and μ from the image size."""
    s = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    schedule = flow_matching(use_dynamic_shifting=True, spacing="trailing", mu=mu)
    for steps in (1, 4, 28):
        s.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        assert torch.equal(torch.tensor(schedule.timesteps(steps), dtype=torch.float32), s.timesteps)
    # μ for an image of n latent tokens, as the Flux pipeline computes it
    flux = flow_matching(use_dynamic_shifting=True, spacing="trailing")
    assert flux.at_image_seq_len(4096).mu == pytest.approx(1.15) and flux.at_image_seq_len(256).mu == pytest.approx(0.5)
    assert flux.at_image_seq_len(1024).mu == calculate_shift(1024)
    with pytest.raises(ValueError, match="needs mu"):
        flux.timesteps(4)


def test_the_network_gets_diffusers_model_time():
    """t = σ·T as float32 of shape (batch,), as FlowMatchEulerDiscreteScheduler.timesteps holds it; VP: int64."""
    seen = []

    def model(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    schedule = flow_matching(3.0)
    t = schedule.timesteps(10)[3]
    make_denoiser(model, schedule)(torch.zeros(5, 2), t)
    assert seen[-1].dtype == torch.float32 and seen[-1].shape == (5,)
    s = FlowMatchEulerDiscreteScheduler(shift=3.0)
    s.set_timesteps(10)
    assert torch.equal(seen[-1], s.timesteps[3].expand(5))
    make_denoiser(model, DiscreteVP(torch.linspace(0.99, 0.01, 100, dtype=torch.float64)))(torch.zeros(5, 2), 42)
    assert seen[-1].dtype == torch.int64 and seen[-1].tolist() == [42] * 5


def test_schedule_inverse_maps_and_inner_grids():
    for _, schedule in CONFIGS.values():
        for sigma in (0.999, 0.7, 0.3, 0.05, 0.004):
            u = schedule._unshifted(sigma)
            assert schedule._sigma(u) == pytest.approx(sigma, rel=1e-12)
        top = schedule.top
        if schedule.spacing == "trailing":
            assert schedule.inner_timesteps(top, 7) == schedule.timesteps(7)  # nested(1, M) is vanilla(M)
        low = 2.5 if schedule.shift_terminal is None else 150.0  # a terminal shift ends at σ = 0.1
        for start in (top, 731.5, 160.0, low):
            for steps, power in ((1, 1.0), (5, 1.0), (9, 2.0)):
                grid = schedule.inner_timesteps(start, steps, power)
                assert grid[0] == start and len(grid) == steps  # a continuous grid: M steps from anywhere
                assert all(a > b > 0 for a, b in zip(grid, grid[1:]))


def test_flow_prediction_conversions():
    x, out = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    level = flow_matching().level(300.0)
    torch.testing.assert_close(to_denoised(out, x, level, "flow"), x - 0.3 * out, rtol=0, atol=0)
    for pred in ("flow", "sample", "v_prediction", "epsilon"):  # round trips on a non-VP level
        from nested_diffusion.schedules import from_denoised

        torch.testing.assert_close(to_denoised(from_denoised(out, x, level, pred), x, level, pred), out)
    with pytest.raises(ValueError, match="epsilon.*pure noise"):
        flow_matching().check_prediction_type("epsilon")


def test_from_scheduler():
    schedule, prediction = from_scheduler(FlowMatchEulerDiscreteScheduler(shift=3.0))
    assert (schedule, prediction) == (flow_matching(3.0), "flow")
    schedule, prediction = from_scheduler(DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0,
                                                                      prediction_type="flow_prediction"))
    assert prediction == "flow" and schedule.spacing == "dpmsolver"
    with pytest.raises(ValueError, match="Karras"):
        from_scheduler(FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True))
    for bad in (dict(shift=0.0), dict(spacing="leading"), dict(mu=0.5), dict(time_shift_type="cubic"),
                dict(shift_terminal=1.5), dict(shift_terminal=0.1, spacing="trailing")):
        with pytest.raises(ValueError):
            flow_matching(**bad)


# -- samplers against diffusers' loops -----------------------------------------------------------------
def euler_loop(scheduler, model, x, steps, mu=None):
    """diffusers' own loop: FlowMatchEulerDiscreteScheduler.step on the network's velocity."""
    scheduler.set_timesteps(steps, mu=mu)
    for t in scheduler.timesteps:
        x = scheduler.step(model(x, t.expand(len(x))), t, x).prev_sample
    return x


@pytest.mark.parametrize("name", ["shift1", "shift3", "dynamic", "dynamic-linear", "terminal"])
@pytest.mark.parametrize("steps", [2, 5, 28])
def test_euler_equals_flowmatch_euler(gmm, name, steps):
    """vanilla_sample(sampler="ddim", eta=0) on a flow schedule is Euler on the velocity: diffusers' loop ≤ 1e-5."""
    config, schedule = CONFIGS[name]
    model = gmm.model(schedule)
    ref = euler_loop(FlowMatchEulerDiscreteScheduler(**config), model, noise(), steps, schedule.mu)
    got = vanilla_sample(model, schedule, noise(), steps=steps, sampler="ddim", eta=0.0).run().image
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    # nested with one inner step is the same Euler run (outer DDIM η = 0), to float64 precision
    nested = nested_sample(model, schedule, noise(), outer_steps=steps, inner_steps=1, outer_eta=0.0).run().image
    torch.testing.assert_close(nested, got, rtol=0, atol=1e-12)


def test_renoise_is_flowmatch_stochastic_sampling(gmm):
    """The renoising step x' = (1-σ') x̂0 + σ' z is FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)."""
    schedule = flow_matching(3.0)
    model = gmm.model(schedule)
    s = FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True)
    s.set_timesteps(12)
    x, g = noise().float(), gen(5)  # the scheduler draws its noise in float32
    for t in s.timesteps:
        x = s.step(model(x, t.expand(len(x))), t, x, generator=g).prev_sample
    got = VanillaSession(model, schedule, noise().float(), steps=12, sampler=Renoise(), generator=gen(5)).run().image
    torch.testing.assert_close(got, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sde", [False, True])
@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [6, 20])
def test_dpmpp_2m_on_flow_equals_diffusers_flow_sigmas(gmm, sde, shift, steps):
    """DPM-Solver++(2M) on the flow grid of DPMSolverMultistepScheduler(use_flow_sigmas=True,
    prediction_type="flow_prediction") — Sana's solver — equals diffusers' loop, step by step."""
    s = DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=shift, prediction_type="flow_prediction",
                                    solver_order=2, algorithm_type="sde-dpmsolver++" if sde else "dpmsolver++",
                                    final_sigmas_type="zero")
    s.set_timesteps(steps)
    schedule, prediction = from_scheduler(s)
    assert prediction == "flow"
    model = gmm.model(schedule)
    times = schedule.timesteps(steps)
    assert [schedule.level(t).sigma for t in times] == s.sigmas[:-1].double().tolist()  # its grid, exactly
    start = noise().float() if sde else noise()  # diffusers draws the SDE's noise in float32
    x, g, ref = start, gen(3), []
    for i, t in enumerate(s.timesteps):  # the network is asked at the exact σ·T (diffusers casts it to int64)
        out = model(x, torch.full((len(x),), float(s.sigmas[i]) * 1000, dtype=torch.float32))
        x = s.step(out, t, x, generator=g).prev_sample
        ref.append(x)
    sampler = make_sampler("dpmpp-2m", 1.0 if sde else 0.0)
    got = [xn for _, _, xn in iterate(make_denoiser(model, schedule), start, times, schedule, sampler, gen(3))]
    for i, (a, b) in enumerate(zip(got, ref)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {i}")


# -- the same model in other variables ----------------------------------------------------------------------
@pytest.mark.parametrize("sampler,eta", [("ddim", 0.0), ("ddim", 1.0), ("dpmpp-2m", 0.0), ("dpmpp-2m", 0.85),
                                         ("dpmpp-3m", 0.5)])
def test_flow_and_vp_change_of_variables(gmm, sampler, eta):
    """A flow model at σ is a VP model at ᾱ = α²/(α²+σ²) with x_vp = x/√(α²+σ²): every sampler gives the same
    samples for the same noise (σ = 1 is ᾱ = 0, the zero-terminal-SNR end of the VP table)."""
    flow = flow_matching(3.0)
    # grid times whose float32 model time is exact, so the network sees the very σ the sampler steps from
    times = [round(t * 8) / 8 for t in flow.timesteps(12)]
    levels = [flow.level(t) for t in times]
    vp = DiscreteVP(torch.tensor([a * a / (a * a + s * s) for a, s in reversed(levels)], dtype=torch.float64))
    assert vp.timesteps(12) == list(range(11, -1, -1)) and vp.alphas_cumprod[-1] == 0
    flow_run = VanillaSession(gmm.model(flow), flow, noise(), steps=12, timesteps=times, sampler=sampler, eta=eta,
                              generator=gen(1))
    vp_run = vanilla_sample(gmm.model(vp, "v_prediction"), vp, noise(), steps=12, sampler=sampler, eta=eta,
                            prediction_type="v_prediction", generator=gen(1))
    for f, v in zip(flow_run, vp_run):  # the x̂0 previews, then the final sample (r = 1 at the clean end)
        torch.testing.assert_close(f.image, v.image, rtol=0, atol=1e-10)
    torch.testing.assert_close(flow_run.x, vp_run.x, rtol=0, atol=1e-10)


# -- nested diffusion and its accounting ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["shift1", "shift3", "dynamic", "terminal"])
@pytest.mark.parametrize("spacing", ["karras", "logsnr"])
def test_noise_spaced_grids_on_flow(name, spacing):
    """Karras / log-SNR grids on a flow schedule space σ/α = σ/(1-σ) from the start's level down to
    FLOW_NOISE_GRID_END's (σ/α = 0.03), exactly (continuous times: no rounding); σ = 1 has no finite level, so
    they start lower."""
    from nested_diffusion.schedules import FLOW_NOISE_GRID_END, noise_spaced_levels

    base = CONFIGS[name][1]
    schedule = base.replace(spacing=spacing)
    assert schedule != base and schedule.level(400.0) == base.level(400.0)  # the same levels: only the grids differ
    lowest = max(float(base._sigma(base._u_min)), FLOW_NOISE_GRID_END / (1 + FLOW_NOISE_GRID_END))
    # above the smallest training σ (0.001-0.009) but a terminal shift's (σ = 0.1)
    assert lowest == pytest.approx(0.1 if name == "terminal" else 0.03 / 1.03)
    for start in (999.0, 731.5, 350.0, 160.0):
        for steps in (1, 2, 5, 13):
            grid = schedule.inner_timesteps(start, steps)
            assert grid[0] == start and len(grid) == steps and all(a > b > 0 for a, b in zip(grid, grid[1:]))
            level = [(t / 1000) / (1 - t / 1000) for t in grid]
            sigma = start / 1000
            want = noise_spaced_levels(spacing, sigma / (1 - sigma), lowest / (1 - lowest), steps)
            assert level == pytest.approx(want, rel=1e-9)
            if steps > 1:
                assert grid[-1] == pytest.approx(lowest * 1000, rel=1e-9)
    if spacing == "karras":  # evenly spaced in (σ/α)^(1/ρ)
        roots = [((t / 1000) / (1 - t / 1000)) ** (1 / 7) for t in schedule.inner_timesteps(600.0, 6)]
        assert np.diff(roots) == pytest.approx([np.diff(roots)[0]] * 5, rel=1e-9)
        assert repr(schedule).endswith("spacing='karras', rho=7)") and schedule.replace(rho=3.0) != schedule
    with pytest.raises(ValueError, match="infinite at σ = 1"):
        schedule.inner_timesteps(1000.0, 5)
    if base.top >= 1000.0:
        with pytest.raises(ValueError, match="infinite at σ = 1"):
            schedule.timesteps(5)
    with pytest.raises(ValueError, match="start must be above"):
        schedule.inner_timesteps(lowest * 1000, 3)
    with pytest.raises(ValueError, match="power bends the trailing grid"):
        schedule.inner_timesteps(500.0, 5, 2.0)
    with pytest.raises(ValueError, match="rho must be a positive number"):
        base.replace(spacing="karras", rho=0)


def test_noise_spaced_inner_runs_on_flow(gmm, counting):
    """A nested run whose restarts use Karras grids on a flow schedule: every NFE is counted, the restarts'
    network times are their Karras grids, and the first run keeps the schedule's own grid."""
    schedule = flow_matching(3.0)
    model = counting(gmm.model(schedule))
    session = nested_sample(model, schedule, noise(4), outer_timesteps=[1000.0, 600.0, 300.0], inner_steps=[4, 6, 6],
                            outer_update="renoise", inner_sampler="unipc", generator=gen(),
                            inner_spacing=["linspace", "karras", "karras"])
    frames = list(session)
    assert [f.nfe for f in frames] == [4, 10, 16] and model.calls == 16
    karras = schedule.replace(spacing="karras")
    want = schedule.inner_timesteps(1000.0, 4) + karras.inner_timesteps(600.0, 6) + karras.inner_timesteps(300.0, 6)
    assert model.timesteps == pytest.approx(want, rel=1e-6)


def test_nested_nfe_is_exact_on_continuous_grids(gmm, counting):
    """No min(M, τ+1) cap on a continuous grid: an inner run of M steps costs M NFEs from any restart."""
    schedule = flow_matching(3.0)
    model = counting(gmm.model(schedule))
    session = nested_sample(model, schedule, noise(4), outer_timesteps=[1000.0, 40.0, 3.5], inner_steps=[10, 20, 30],
                            inner_sampler="dpmpp-2m", outer_update="renoise", generator=gen())
    assert session.checkpoints() == [10, 30, 60]
    for frame, expected in zip(session, [10, 30, 60]):
        assert frame.nfe == model.calls == expected
    assert [round(t, 3) for t in model.timesteps[:1]] == [1000.0] and min(model.timesteps) > 0
    assert isinstance(frame.timestep, float) and frame.timestep == 3.5


@pytest.mark.parametrize("name", ["shift1", "shift3"])
def test_plan_layout_on_flow(name):
    """The restart levels are noise levels σ/α: on any flow schedule σ = s/(1+s), whatever its shift; the budget
    is spent exactly (continuous grids never cap a run)."""
    schedule = CONFIGS[name][1]
    assert outer_timesteps_at_sigmas(schedule, [1.0]) == [1000.0, 500.0]
    for budget in (3, 20, 50, 100, 137, 1000):
        layout = plan_layout(budget, schedule)
        assert layout.nfe == budget and layout.outer_timesteps[0] == schedule.top
        assert all(a > b > 0 for a, b in zip(layout.outer_timesteps, layout.outer_timesteps[1:]))
    layout = plan_layout(100, schedule)
    levels = [restart_noise_level(n) for n in (10, 20, 30, 50, 75)]  # the first restart too: 175·10^-2 is lower
    assert layout.outer_timesteps == pytest.approx([1000.0] + [1000 * s / (1 + s) for s in levels])
    # the first run on the schedule's own grid (σ = 1 has no finite log-SNR), restarts this low on Karras grids
    # and the high first restart of budget 50 (σ/α = 7) uniform in log-SNR — the same rule as on VP
    assert layout.inner_spacing == (schedule.spacing,) + ("karras",) * 5 and layout.inner_sampler == "unipc"
    assert plan_layout(50, schedule).inner_spacing == (schedule.spacing, "logsnr") + ("karras",) * 3
    assert resolve_layout(schedule) == layout and layout.outer_update == "renoise"
    # a size-dependent shift: the plan needs μ, and follows it only through the inner grids
    flux = flow_matching(use_dynamic_shifting=True, spacing="trailing")
    with pytest.raises(ValueError, match="needs mu"):
        plan_layout(100, flux)
    a, b = plan_layout(100, flux.at_image_seq_len(256)), plan_layout(100, flux.at_image_seq_len(4096))
    assert a.outer_timesteps[1:] == b.outer_timesteps[1:] and a.nfe == b.nfe == 100


def test_outer_times_are_validated_on_flow(gmm):
    schedule = flow_matching()
    for bad in ([1000.0, 1000.0], [1001.0], [500.0, 0.0], []):
        with pytest.raises((ValueError, TypeError), match="outer_timesteps"):
            nested_sample(gmm.model(schedule), schedule, noise(2), outer_timesteps=bad)
    with pytest.raises(ValueError, match="inner_steps must be a positive integer"):
        nested_sample(gmm.model(schedule), schedule, noise(2), inner_steps=0)
    # a continuous grid takes any step count
    assert nested_sample(gmm.model(schedule), schedule, noise(2), outer_steps=2, inner_steps=1500).total_nfe == 3000


# -- restoration on a flow schedule -----------------------------------------------------------------------------
def test_restoration_on_flow(gmm, counting):
    """DDRM in variance-exploding variables holds on a flow schedule, from σ = 1 (α = 0) on; identities hold."""
    schedule = flow_matching(3.0)
    truth = gmm.sample(8, gen(9))[0].reshape(8, 1, 8, 8)
    mask = torch.rand(1, 8, 8, generator=gen(5)) < 0.5
    op = Inpainting(mask)
    y = op.measure(truth, 0.05, gen(11))
    x = torch.randn(8, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    model = counting(gmm.model(schedule))
    session = nested_restore(model, schedule, x, operator=op, measurement=y, sigma_y=0.05, generator=gen())
    frames = list(session)
    assert [f.nfe for f in frames] == [10, 20, 30, 50, 75, 100] == session.checkpoints() and model.calls == 100
    assert all(torch.isfinite(f.image).all() for f in frames)
    # one inner step is DDRM with the outer η (the outer grid is the vanilla grid)
    one = nested_restore(gmm.model(schedule), schedule, x, operator=op, measurement=y, sigma_y=0.05, outer_steps=8,
                         inner_steps=1, outer_eta=0.85, generator=gen(2)).run().image
    ddrm = ddrm_sample(gmm.model(schedule), schedule, x, operator=op, measurement=y, sigma_y=0.05, steps=8, eta=0.85,
                       generator=gen(2)).run().image
    torch.testing.assert_close(one, ddrm, rtol=0, atol=1e-10)
    # a noiseless measurement is met exactly by the last frame
    sr = SuperResolution(2)
    y0 = sr(truth)
    final = nested_restore(gmm.model(schedule), schedule, x, operator=sr, measurement=y0, sigma_y=0.0, outer_steps=3,
                           inner_steps=4, generator=gen()).run().image
    torch.testing.assert_close(sr(final), y0, rtol=0, atol=1e-8)
    # fork(indices=) picks each image's own measurement with it
    child = session.fork(indices=[6, 1])
    assert torch.equal(child.problem.measurement, session.problem.measurement[[6, 1]])


def test_gmm_flow_model_is_the_exact_velocity(gmm):
    """E[ε - x0 | x_σ]: from exact posterior means, v̂ = (x - E[x0|x])/σ on a flow level (α + σ = 1)."""
    schedule = flow_matching(3.0)
    x = noise(32)
    for t in (1000.0, 640.0, 37.5):
        v = gmm.model(schedule)(x, torch.full((32,), t, dtype=torch.float32))
        sigma = float(torch.tensor(t, dtype=torch.float32)) / 1000
        mean = gmm.denoise(x, Level(1 - sigma, sigma))
        torch.testing.assert_close(v, (x - mean) / sigma, rtol=1e-10, atol=1e-10)
    # at pure noise the posterior mean is the data mean
    torch.testing.assert_close(gmm.denoise(x, Level(0.0, 1.0)), gmm.mean().expand(32, 64), rtol=0, atol=1e-12)
    assert math.isinf(Level(0.0, 1.0).noise) and Level(0.0, 1.0).log_snr == -math.inf
    assert isinstance(flow_matching(), FlowMatching)
