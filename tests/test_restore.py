"""nested_restore / ddrm_sample: exact NFE counts, identities, session semantics and bad input, on
the exact Gaussian-mixture prior (8×8 digits as 1×8×8 images)."""

import math

import pytest
import torch

from nested_diffusion import DDRMSession, Frame, NestedRestoreSession, ddrm_sample, nested_restore
from nested_diffusion.defaults import (DEFAULT_RESTORE_INNER_ETA, DEFAULT_RESTORE_INNER_GRID_POWER,
                                       DEFAULT_RESTORE_OUTER_ETA)
from nested_diffusion.planner import plan_schedule
from nested_diffusion.restoration import (Dense, Denoising, Inpainting, SuperResolution, ddrm_step,
                                          residual_ratio)
from nested_diffusion.samplers import ddim_step
from nested_diffusion.schedules import make_alphas_cumprod, spaced_timesteps

SHAPE = (1, 8, 8)
MASK = (torch.rand(SHAPE, generator=torch.Generator().manual_seed(5)) < 0.5)


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def noise(n=16, seed=0):
    return torch.randn(n, *SHAPE, generator=gen(seed), dtype=torch.float64)


OPERATORS = {
    "inpainting": lambda: Inpainting(MASK),
    "sr2": lambda: SuperResolution(2),
    "dense": lambda: Dense(torch.randn(20, 64, generator=gen(3), dtype=torch.float64) / 8),
    "dense-rank-5": lambda: Dense(torch.randn(12, 5, generator=gen(3), dtype=torch.float64)
                                  @ torch.randn(5, 64, generator=gen(4), dtype=torch.float64) / 8),
    "denoising": lambda: Denoising(),
}


@pytest.fixture(scope="module")
def truth(gmm):
    return gmm.sample(16, gen(9))[0].reshape(16, *SHAPE)


def problem(name, truth, sigma_y=0.05):
    op = OPERATORS[name]()
    return dict(operator=op, measurement=op.measure(truth, sigma_y, gen(11)), sigma_y=sigma_y)


# -- NFE accounting ----------------------------------------------------------------------------
def test_nested_restore_default_layout_and_exact_nfe(gmm, linear, counting, truth):
    model = counting(gmm.model(linear))
    session = nested_restore(model, linear, noise(), **problem("inpainting", truth), generator=gen())
    assert isinstance(session, NestedRestoreSession) and model.calls == 0
    assert session.inner_steps == plan_schedule(100) and session.checkpoints() == [10, 20, 30, 50, 75, 100]
    for k, frame in enumerate(session, start=1):
        assert isinstance(frame, Frame) and frame.nfe == model.calls == session.checkpoints()[k - 1]
        assert frame.image.shape == (16, *SHAPE) and frame.step == k and frame.num_steps == 6
    assert model.calls == session.total_nfe == 100
    # each inner run starts at its outer timestep: DDRM from x_τ on spaced_timesteps(τ, M, power)
    outer, power = spaced_timesteps(999, 6), DEFAULT_RESTORE_INNER_GRID_POWER
    assert session.outer_timesteps == outer and session.inner_grid_power == power
    assert model.timesteps[:10] == spaced_timesteps(999, 10, power)
    assert model.timesteps[30:50] == spaced_timesteps(outer[3], 20, power)
    assert model.timesteps[75:] == spaced_timesteps(outer[5], 25, power)
    assert session.outer_sampler.eta == DEFAULT_RESTORE_OUTER_ETA and session.inner_sampler.eta == DEFAULT_RESTORE_INNER_ETA


def test_inner_runs_are_capped_by_the_outer_timestep(gmm, counting, truth):
    """An inner run started at τ costs min(M, τ + 1) NFEs, as in the core."""
    ac = make_alphas_cumprod("linear", 50)
    model = counting(gmm.model(ac))
    session = nested_restore(model, ac, noise(4), **problem("sr2", truth[:4]), outer_steps=25, inner_steps=8,
                             generator=gen())
    expected = [min(8, tau + 1) for tau in spaced_timesteps(49, 25)]
    assert [f.nfe for f in session] == torch.tensor(expected).cumsum(0).tolist()
    assert model.calls == sum(expected) == session.total_nfe


def test_ddrm_sample_one_frame_per_call(gmm, linear, counting, truth):
    model = counting(gmm.model(linear))
    session = ddrm_sample(model, linear, noise(), **problem("dense", truth), steps=20, generator=gen())
    assert isinstance(session, DDRMSession)
    frames = list(session)
    assert [f.nfe for f in frames] == list(range(1, 21)) == session.checkpoints()
    assert model.calls == 20 and model.timesteps == spaced_timesteps(999, 20)
    assert frames[-1].is_final and frames[-1].timestep == model.timesteps[-1]


def test_grid_power_bends_the_inner_grids(gmm, linear, counting, truth):
    model = counting(gmm.model(linear))
    session = nested_restore(model, linear, noise(2), **problem("sr2", truth[:2]), inner_grid_power=2.0)
    outer = spaced_timesteps(999, 6)
    assert session.checkpoints() == [10, 20, 30, 50, 75, 100]
    session.run()
    assert model.timesteps[:10] == spaced_timesteps(999, 10, 2.0) == [999, 809, 639, 489, 359, 249, 159, 89, 39, 9]
    assert model.timesteps[75:] == spaced_timesteps(outer[5], 25, 2.0)
    model.timesteps.clear()
    ddrm_sample(model, linear, noise(2), **problem("sr2", truth[:2]), steps=30, grid_power=1.5).run()
    assert model.timesteps == spaced_timesteps(999, 30, 1.5)


@pytest.mark.parametrize("kind", ["ddrm", "unconditional"])
def test_layouts(gmm, linear, counting, truth, kind):
    model = counting(gmm.model(linear))
    s = nested_restore(model, linear, noise(2), **problem("sr2", truth[:2]), inner_steps=[5, 3, 1], inner=kind)
    assert [f.nfe for f in s] == [5, 8, 9] and model.calls == 9
    s = nested_restore(model, linear, noise(2), **problem("sr2", truth[:2]), inner_steps=4)
    assert s.num_steps == 10 and s.total_nfe == 40  # one count alone keeps the other at 10
    s = nested_restore(model, linear, noise(2), **problem("sr2", truth[:2]), outer_steps=4)
    assert s.inner_steps == [10] * 4


# -- identities --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["inpainting", "sr2", "dense", "dense-rank-5"])
@pytest.mark.parametrize("eta", [0.0, 0.85, 1.0])
def test_one_inner_step_is_ddrm(gmm, linear, truth, name, eta):
    """With M = 1 the inner output is the network's x̂0 (σ_y > 0), so nested(K, 1) with outer η is
    exactly DDRM with K steps and η — frames, NFEs and timesteps."""
    model = gmm.model(linear)
    p = problem(name, truth)
    nested = list(nested_restore(model, linear, noise(), **p, outer_steps=12, inner_steps=1, outer_eta=eta,
                                 generator=gen()))
    ddrm = list(ddrm_sample(model, linear, noise(), **p, steps=12, eta=eta, generator=gen()))
    assert [f.nfe for f in nested] == [f.nfe for f in ddrm] == list(range(1, 13))
    assert [f.timestep for f in nested] == [f.timestep for f in ddrm]
    for a, b in zip(nested, ddrm):
        torch.testing.assert_close(a.image, b.image, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("eta,power", [(0.5, 1.0), (1.0, 1.0), (0.85, 2.0)])
def test_one_outer_step_is_a_ddrm_run(gmm, linear, truth, eta, power):
    """nested(1 outer, M inner) starts from DDRM's x_T' and runs DDRM with M steps: ddrm_sample(M)."""
    model = gmm.model(linear)
    p = problem("sr2", truth)
    nested = nested_restore(model, linear, noise(), **p, outer_steps=1, inner_steps=15, eta=eta,
                            inner_grid_power=power, generator=gen()).run()
    ddrm = ddrm_sample(model, linear, noise(), **p, steps=15, eta=eta, grid_power=power, generator=gen()).run()
    assert nested.nfe == ddrm.nfe == 15
    torch.testing.assert_close(nested.image, ddrm.image, rtol=1e-10, atol=1e-10)


def test_inpainting_everything_observed_is_denoising(gmm, linear, truth):
    model = gmm.model(linear)
    y = truth + 0.1 * torch.randn(truth.shape, generator=gen(2), dtype=torch.float64)
    a = list(nested_restore(model, linear, noise(), operator=Inpainting(torch.ones(SHAPE, dtype=torch.bool)),
                            measurement=y.reshape(16, 64), sigma_y=0.1, generator=gen()))
    b = list(nested_restore(model, linear, noise(), operator=Denoising(), measurement=y, sigma_y=0.1, generator=gen()))
    for fa, fb in zip(a, b):
        assert torch.equal(fa.image, fb.image)


@pytest.mark.parametrize("name", ["inpainting", "sr2", "dense", "denoising"])
def test_noiseless_measurements_are_met_exactly(gmm, linear, truth, name):
    """σ_y = 0: the last DDRM step (σ' = 0, η_b = 1) sets the measured components to ȳ, so Hx̂ = y."""
    model = gmm.model(linear)
    p = problem(name, truth, sigma_y=0.0)
    for session in (ddrm_sample(model, linear, noise(), **p, steps=10, generator=gen()),
                    nested_restore(model, linear, noise(), **p, outer_steps=3, inner_steps=4, generator=gen())):
        final = session.run().image
        torch.testing.assert_close(p["operator"](final), p["measurement"], rtol=0, atol=1e-9)
    if name == "denoising":
        torch.testing.assert_close(final, truth, rtol=0, atol=1e-12)


def test_float32_sessions(gmm, linear, truth):
    """Models run in float32: the spectral work follows the noise's dtype and still meets y."""
    model = gmm.model(linear)
    p = problem("inpainting", truth, sigma_y=0.0)
    p["measurement"] = p["measurement"].float()
    frame = nested_restore(model, linear, noise().float(), **p, outer_steps=3, inner_steps=4, generator=gen()).run()
    assert frame.image.dtype == torch.float32 and torch.isfinite(frame.image).all()
    torch.testing.assert_close(p["operator"](frame.image), p["measurement"], rtol=0, atol=1e-5)


def test_ddrm_step_cases():
    """The three cases of the update, element by element; s = 0 with η = 0 is DDIM with η = 0."""
    x_bar, x_bar_theta = torch.tensor([[3.0, 3.0, 3.0, 3.0]]), torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    y_bar, s = torch.tensor([[0.0, 2.0, 2.0, 2.0]]), torch.tensor([0.0, 0.1, 1.0, 2.0])
    sigma, sigma_next, sigma_y = 2.0, 0.5, 0.1  # s σ' = 0, 0.05 (< σ_y), 0.5, 1 (≥ σ_y)
    noise = torch.randn(1, 4, generator=gen(3))  # what ddrm_step draws from the same generator
    eps_bar = (3.0 - 1.0) / 2.0
    out = ddrm_step(x_bar, x_bar_theta, y_bar, s, sigma, sigma_next, sigma_y, eta=0.0, eta_b=1.0, generator=gen(3))
    expected = [1.0 + 0.5 * eps_bar, 1.0 + 0.5 * (2.0 - 1.0) * 0.1 / 0.1,
                2.0 + math.sqrt(0.25 - 0.01 / 1.0) * noise[0, 2], 2.0 + math.sqrt(0.25 - 0.01 / 4.0) * noise[0, 3]]
    torch.testing.assert_close(out, torch.tensor([expected]))
    out = ddrm_step(x_bar, x_bar_theta, y_bar, s, sigma, sigma_next, sigma_y, eta=0.6, eta_b=0.5, generator=gen(3))
    expected = [1.0 + 0.8 * 0.5 * eps_bar + 0.6 * 0.5 * noise[0, 0],
                1.0 + 0.8 * 0.5 * 1.0 + 0.6 * 0.5 * noise[0, 1],
                1.5 + math.sqrt(0.25 - 0.25 * 0.01 / 1.0) * noise[0, 2],
                1.5 + math.sqrt(0.25 - 0.25 * 0.01 / 4.0) * noise[0, 3]]
    torch.testing.assert_close(out, torch.tensor([expected]))
    # σ' = 0: nothing random — x̄_θ, or ȳ in the measured components when σ_y = 0
    torch.testing.assert_close(ddrm_step(x_bar, x_bar_theta, y_bar, s, sigma, 0.0, sigma_y, 0.85, 1.0), x_bar_theta)
    torch.testing.assert_close(ddrm_step(x_bar, x_bar_theta, y_bar, s, sigma, 0.0, 0.0, 0.85, 1.0),
                               torch.tensor([[1.0, 2.0, 2.0, 2.0]]))
    # s = 0, η = 0 in x-space: x' = √ᾱ' (x̂0 + σ' ε̄) = DDIM(η = 0)
    a, a_next = 0.3, 0.7
    x, d = torch.randn(2, 5, generator=gen(1), dtype=torch.float64), torch.randn(2, 5, generator=gen(2), dtype=torch.float64)
    zero = torch.zeros(5, dtype=torch.float64)
    sig = lambda ab: math.sqrt((1 - ab) / ab)  # noqa: E731
    x_next = math.sqrt(a_next) * ddrm_step(x / math.sqrt(a), d, torch.zeros_like(x), zero, sig(a), sig(a_next), 0.1, 0.0, 1.0)
    torch.testing.assert_close(x_next, ddim_step(x, d, a, a_next, 0.0))


def test_rank_deficient_dense_restores(gmm, linear, truth):
    p = problem("dense-rank-5", truth)
    session = nested_restore(gmm.model(linear), linear, noise(), **p, generator=gen())
    assert int((session.problem.s > 0).sum()) == 5 and (session.problem.y_bar[:, 5:] == 0).all()
    final = session.run().image
    ddrm = ddrm_sample(gmm.model(linear), linear, noise(), **p, generator=gen()).run().image
    nested_ratio, ddrm_ratio = (residual_ratio(p["operator"], x, p["measurement"], 0.05) for x in (final, ddrm))
    assert torch.isfinite(final).all() and nested_ratio < 3 and nested_ratio < ddrm_ratio  # measured 2.6 vs 4.2


def test_unconditional_inner_ignores_the_measurement(gmm, truth):
    """The PSC variant's frames come from unconditional inner runs: their residuals are far above the
    noise level, while nested DDRM's stay near it (PAPER.md)."""
    ac = make_alphas_cumprod("cosine")
    model = gmm.model(ac)
    p = problem("inpainting", truth)
    ddrm_inner = [residual_ratio(p["operator"], f.image, p["measurement"], 0.05)
                  for f in nested_restore(model, ac, noise(), **p, generator=gen())]
    psc = [residual_ratio(p["operator"], f.image, p["measurement"], 0.05)
           for f in nested_restore(model, ac, noise(), **p, inner="unconditional", generator=gen())]
    assert all(b > 3 * a for a, b in zip(ddrm_inner[2:], psc[2:])), (ddrm_inner, psc)


# -- sessions: randomness, forks, budgets, deadlines --------------------------------------------
def test_determinism_and_fork(gmm, linear, truth):
    model = gmm.model(linear)
    p = problem("sr2", truth)
    run = lambda seed: list(nested_restore(model, linear, noise(), **p, generator=gen(seed)))  # noqa: E731
    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(x.image, y.image) for x, y in zip(a, b))
    assert not torch.allclose(a[-1].image, c[-1].image)
    parent = nested_restore(model, linear, noise(), **p, generator=gen(3))
    parent.step(), parent.step()
    twin, branch = parent.fork(), parent.fork(generator=gen(99))
    rest, twin_frames, branch_frames = list(parent), list(twin), list(branch)
    assert [f.nfe for f in rest] == [f.nfe for f in twin_frames] == [f.nfe for f in branch_frames] == [30, 50, 75, 100]
    assert all(torch.equal(x.image, y.image) for x, y in zip(rest, twin_frames))
    assert all(torch.equal(x.image, y.image) for x, y in zip(rest, a[2:]))
    assert not torch.allclose(branch_frames[-1].image, rest[-1].image)


@pytest.mark.parametrize("make", [
    lambda m, ac, p: nested_restore(m, ac, noise(), **p, outer_steps=3, inner_steps=4, generator=gen()),
    lambda m, ac, p: ddrm_sample(m, ac, noise(), **p, steps=8, generator=gen()),
])
def test_fork_of_chosen_images_keeps_their_measurements(gmm, linear, truth, make):
    """fork(indices=) picks the images' measurements with their states: with σ_y = 0 each restored
    row meets *its own* y exactly."""
    p = problem("sr2", truth, sigma_y=0.0)
    session = make(gmm.model(linear), linear, p)
    session.step()
    child = session.fork(indices=[5, 5, 2])
    final = child.run().image
    assert final.shape == (3, *SHAPE) and session.nfe < child.nfe
    torch.testing.assert_close(p["operator"](final), p["measurement"][[5, 5, 2]], rtol=0, atol=1e-9)
    assert child.problem.y_bar.shape[0] == 3 and session.problem.y_bar.shape[0] == 16


def test_budget_and_deadline(gmm, linear, truth, fake_clock):
    base = gmm.model(linear)
    p = problem("inpainting", truth)
    full = list(nested_restore(base, linear, noise(), **p, generator=gen()))
    session = nested_restore(base, linear, noise(), **p, generator=gen())
    frame = session.run(max_nfe=45)
    assert frame.nfe == 30 and not session.done and torch.equal(frame.image, full[2].image)
    session = nested_restore(fake_clock.slow(base), linear, noise(), **p, generator=gen())
    frame = session.run(deadline=40)  # the 4th outer step (20 calls) is cut after 10
    assert frame.nfe == 30 and session.nfe == 30 and fake_clock.now == 40
    assert torch.equal(session.run().image, full[-1].image)  # the interrupted step left no trace
    ddrm = ddrm_sample(fake_clock.slow(base), linear, noise(), **p, steps=50, generator=gen())
    assert ddrm.run(deadline=7).nfe == 7 and ddrm.nfe == 7


# -- bad input: clear errors before any network call ---------------------------------------------
class Forbidden:
    def __call__(self, *a, **k):
        raise AssertionError("the model must not be called")


@pytest.mark.parametrize("edit,error,match", [
    (dict(operator=Inpainting(torch.ones(1, 8, 7, dtype=torch.bool))), ValueError, "mask has shape"),
    (dict(operator=SuperResolution(3)), ValueError, "divisible"),
    (dict(operator=Dense(torch.ones(4, 65))), ValueError, "65 columns"),
    (dict(operator="inpaint"), TypeError, "operator"),
    (dict(sigma_y=-0.1), ValueError, "sigma_y"),
    (dict(sigma_y=float("nan")), ValueError, "sigma_y"),
    (dict(sigma_y="0.1"), TypeError, "sigma_y"),
    (dict(measurement=torch.zeros(16, 33, dtype=torch.float64)), ValueError, "measurement must have shape"),
    (dict(measurement=torch.zeros(15, 32, dtype=torch.float64)), ValueError, "measurement must have shape"),
    (dict(measurement=torch.zeros(16, 32, dtype=torch.long)), TypeError, "measurement"),
    (dict(measurement=torch.full((16, 32), float("nan"), dtype=torch.float64)), ValueError, "NaN"),
    (dict(eta=1.5), ValueError, "eta"),
    (dict(eta_b=-0.1), ValueError, "eta_b"),
    (dict(outer_eta=2.0), ValueError, "outer_eta"),
    (dict(inner="dps"), ValueError, "inner"),
    (dict(inner_steps=0), ValueError, "inner_steps"),
    (dict(inner_grid_power=0.5), ValueError, "inner_grid_power"),
    (dict(outer_steps=3, inner_steps=[1, 2]), ValueError, "inner_steps"),
])
def test_bad_input_before_any_network_call(linear, edit, error, match):
    op = Inpainting(torch.arange(64).reshape(SHAPE) % 2 == 0)
    kwargs = dict(operator=op, measurement=torch.zeros(16, 32, dtype=torch.float64), sigma_y=0.05)
    kwargs.update(edit)
    with pytest.raises(error, match=match):
        nested_restore(Forbidden(), linear, noise(), **kwargs)
    if not {"inner", "inner_steps", "outer_steps", "outer_eta", "inner_grid_power"} & set(edit):
        with pytest.raises(error, match=match):
            ddrm_sample(Forbidden(), linear, noise(), **kwargs)


def test_operator_that_measures_nothing_is_an_error(linear):
    with pytest.raises(ValueError, match="observes nothing"):
        Inpainting(torch.zeros(SHAPE, dtype=torch.bool))
    with pytest.raises(ValueError, match="measures nothing"):
        Dense(torch.zeros(3, 64))


def test_ddrm_bad_grid_power(linear):
    op = Inpainting(torch.arange(64).reshape(SHAPE) % 2 == 0)
    with pytest.raises(ValueError, match="grid_power"):
        ddrm_sample(Forbidden(), linear, noise(), operator=op, measurement=torch.zeros(16, 32, dtype=torch.float64),
                    sigma_y=0.05, grid_power=0.9)
