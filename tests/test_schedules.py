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
