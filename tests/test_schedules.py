import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from nested_diffusion.schedules import (check_alphas_cumprod, from_denoised, make_alphas_cumprod,
                                        spaced_timesteps, to_denoised)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_schedules_match_diffusers(schedule):
    name = "squaredcos_cap_v2" if schedule == "cosine" else schedule
    kw = {} if schedule == "cosine" else dict(beta_start=1e-4 if schedule == "linear" else 0.00085,
                                               beta_end=0.02 if schedule == "linear" else 0.012)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, **kw).alphas_cumprod.double()
    torch.testing.assert_close(make_alphas_cumprod(schedule), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("steps", [1, 4, 10, 25, 50, 100, 1000])
def test_full_grid_is_diffusers_trailing(steps):
    s = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    s.set_timesteps(steps)
    assert spaced_timesteps(999, steps) == s.timesteps.tolist()


@pytest.mark.parametrize("start,steps", [(0, 1), (0, 5), (3, 10), (9, 10), (10, 10), (537, 7), (999, 3)])
def test_inner_grid(start, steps):
    grid = spaced_timesteps(start, steps)
    assert grid[0] == start
    assert len(grid) == min(steps, start + 1)
    assert all(a > b for a, b in zip(grid, grid[1:])) and grid[-1] >= 0


@pytest.mark.parametrize("power", [1.0, 1.5, 2.0, 3.0, 7.0])
def test_power_grids_keep_the_cost_rule(power):
    """Any power: starts at τ, strictly descending, min(M, τ + 1) timesteps (the NFE rule)."""
    for start in list(range(0, 40)) + [99, 166, 537, 832, 999]:
        for steps in (1, 2, 3, 5, 10, 20, 25, 41, 100):
            grid = spaced_timesteps(start, steps, power)
            assert grid[0] == start and len(grid) == min(steps, start + 1) and grid[-1] >= 0
            assert all(a > b for a, b in zip(grid, grid[1:]))


def test_quadratic_grid():
    """DDIM's quadratic selection (Song et al. 2021, App. D.2) from the trailing end: round(1000 (1 - i/M)²) - 1."""
    assert spaced_timesteps(999, 10, 2.0) == [999, 809, 639, 489, 359, 249, 159, 89, 39, 9]
    assert spaced_timesteps(999, 10, 1.0) == spaced_timesteps(999, 10)
    assert spaced_timesteps(4, 4, 3.0) == [4, 2, 1, 0]  # raised to stay distinct: raw 4, 1, 0, 0


def test_grid_rejects_bad_steps():
    with pytest.raises(ValueError, match="steps"):
        spaced_timesteps(10, 0)
    with pytest.raises(ValueError, match="power"):
        spaced_timesteps(10, 3, 0.5)


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_prediction_roundtrip(pred):
    x, x0 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    out = from_denoised(x0, x, 0.3, pred)
    torch.testing.assert_close(to_denoised(out, x, 0.3, pred), x0)


def test_check_alphas_cumprod_errors():
    with pytest.raises(ValueError, match="1-D"):
        check_alphas_cumprod(torch.rand(3, 3))
    with pytest.raises(ValueError, match=r"\(0, 1\] \(the last may be 0\)"):
        check_alphas_cumprod(torch.tensor([1.0, 0.0, 0.0]))  # only the last may be pure noise (zero terminal SNR)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_alphas_cumprod(torch.tensor([1.5, 0.5]))
    with pytest.raises(ValueError, match="non-increasing"):
        check_alphas_cumprod(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="1-D"):
        check_alphas_cumprod(torch.tensor([0.5]))


# -- Karras and log-SNR grids (issue 19: the envelope's grids) --------------------------------------------------
_BETAS = {"linear": dict(beta_schedule="linear"),
          "scaled_linear": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)}


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
@pytest.mark.parametrize("spacing, flag", [("karras", "use_karras_sigmas"), ("logsnr", "use_lu_lambdas")])
@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10, 20, 25, 50])
def test_noise_spaced_grids_are_diffusers(schedule, spacing, flag, steps):
    """DPMSolverMultistepScheduler's Karras (ρ = 7) and Lu-lambda timesteps, exactly, wherever diffusers' are
    distinct; where its rounding repeats a timestep near t = 0 (50 log-SNR steps) ours move up to stay
    distinct (below t = 10)."""
    from diffusers import DPMSolverMultistepScheduler

    from nested_diffusion.schedules import DiscreteVP

    s = DPMSolverMultistepScheduler(**_BETAS[schedule], **{flag: True})
    s.set_timesteps(steps)
    ref = s.timesteps.tolist()
    grid = DiscreteVP(s.alphas_cumprod, spacing=spacing).timesteps(steps)
    assert len(grid) == steps and grid[0] == 999 and grid[-1] == (0 if steps > 1 else 999)
    assert all(a > b for a, b in zip(grid, grid[1:]))
    if all(a > b for a, b in zip(ref, ref[1:])):
        assert grid == ref
    else:
        assert all(g == r for g, r in zip(grid, ref) if r > 10) and all(g >= r for g, r in zip(grid, ref))


@pytest.mark.parametrize("spacing", ["karras", "logsnr"])
def test_noise_spaced_inner_grids(spacing, linear):
    """From a restart τ: starts at τ, ends at 0, strictly descending, min(M, τ + 1) timesteps, and the levels
    follow the named spacing of σ/α (to the timestep rounding)."""
    import math

    from nested_diffusion.schedules import DiscreteVP, karras_noise_levels, log_snr_noise_levels

    vp = DiscreteVP(linear, spacing=spacing)
    for start in (0, 1, 3, 9, 38, 122, 194, 537, 999):
        for steps in (1, 2, 3, 5, 10, 25, 100):
            grid = vp.inner_timesteps(start, steps)
            assert grid[0] == start and len(grid) == min(steps, start + 1) and grid[-1] == (0 if steps > 1 else start)
            assert all(a > b for a, b in zip(grid, grid[1:]))
    noise = lambda t: vp.level(t).noise  # noqa: E731
    grid = vp.inner_timesteps(194, 8)
    want = (karras_noise_levels if spacing == "karras" else log_snr_noise_levels)(noise(194), noise(0), 8)
    for t, s in zip(grid, want):  # each timestep is the nearest one in log σ/α
        assert min(abs(math.log(noise(u) / s)) for u in (t - 1, t, t + 1) if u >= 0) == pytest.approx(
            abs(math.log(noise(t) / s)))
    assert vp.replace(spacing="trailing") == DiscreteVP(linear) and vp != DiscreteVP(linear)
    assert vp.level(500) == DiscreteVP(linear).level(500)  # the same levels: only the grids differ
    with pytest.raises(ValueError, match="power bends the trailing grid"):
        vp.inner_timesteps(500, 5, 2.0)
    with pytest.raises(ValueError, match="spacing must be one of"):
        DiscreteVP(linear, spacing="leading")
    with pytest.raises(ValueError, match="infinite"):  # zero terminal SNR: no finite σ/α at T-1
        DiscreteVP(torch.cat([linear[:-1], torch.zeros(1, dtype=linear.dtype)]), spacing=spacing).timesteps(5)


@pytest.mark.parametrize("spacing", ["karras", "logsnr"])
def test_grid_end_ends_noise_spaced_grids(spacing, linear):
    """grid_end = e: a Karras or log-SNR grid from τ runs down to the timestep nearest e in log σ/α instead of
    t = 0, its levels the named spacing from τ's to e (to the rounding); grid_end below t = 0's level or at/above
    the start's changes nothing; trailing grids ignore it; bad values are refused by name."""
    import math

    from nested_diffusion.schedules import DiscreteVP, FlowMatching, karras_noise_levels, log_snr_noise_levels

    vp, ended = DiscreteVP(linear, spacing=spacing), DiscreteVP(linear, spacing=spacing, grid_end=0.03)
    noise = lambda t: vp.level(t).noise  # noqa: E731
    end = min(range(1000), key=lambda t: abs(math.log(noise(t) / 0.03)) if t else math.inf)
    assert end == 5 and noise(4) < 0.03 < noise(6)
    for start, steps in ((999, 10), (372, 10), (152, 25), (40, 8)):
        grid = ended.inner_timesteps(start, steps)
        assert grid[0] == start and grid[-1] == end and len(grid) == steps and all(a > b for a, b in zip(grid, grid[1:]))
        want = (karras_noise_levels if spacing == "karras" else log_snr_noise_levels)(noise(start), 0.03, steps)
        for t, v in zip(grid, want):  # each timestep the nearest one in log σ/α, as without the end
            assert min(abs(math.log(noise(u) / v)) for u in (t - 1, t, t + 1) if u < 1000) == pytest.approx(
                abs(math.log(noise(t) / v)))
        assert vp.inner_timesteps(start, steps)[-1] == 0
    assert ended.timesteps(10)[-1] == end and vp.timesteps(10)[-1] == 0
    assert DiscreteVP(linear, spacing=spacing, grid_end=1e-4).timesteps(10) == vp.timesteps(10)  # below t = 0's 0.01
    assert ended.inner_timesteps(3, 8) == vp.inner_timesteps(3, 8) == [3, 2, 1, 0]  # a start below the end: as before
    assert DiscreteVP(linear, spacing=spacing, grid_end=50.0).inner_timesteps(194, 8) == vp.inner_timesteps(194, 8)
    assert DiscreteVP(linear, grid_end=0.03).timesteps(10) == DiscreteVP(linear).timesteps(10)  # trailing
    assert vp.replace(grid_end=0.03) == ended != vp and "grid_end=0.03" in repr(ended)
    assert ended.replace(spacing="trailing").grid_end == 0.03
    for bad in (0, -1.0, math.inf, math.nan, "0.03", True):
        with pytest.raises(ValueError, match="grid_end must be a positive noise level"):
            DiscreteVP(linear, spacing=spacing, grid_end=bad)
    # flow: exactly e (continuous times), by default FLOW_NOISE_GRID_END
    flow = FlowMatching(shift=3.0, spacing=spacing)
    sigma = flow.inner_timesteps(600.0, 8)
    assert flow.replace(grid_end=0.03).inner_timesteps(600.0, 8) == sigma
    grid = flow.replace(grid_end=0.1).inner_timesteps(600.0, 8)
    assert grid[0] == 600.0 and grid[-1] / (1000 - grid[-1]) == pytest.approx(0.1, rel=1e-12)
    with pytest.raises(ValueError, match="grid_end must be a positive noise level"):
        flow.replace(grid_end=-0.1)
