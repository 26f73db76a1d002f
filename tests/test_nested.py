import itertools

import pytest
import torch

from nested_diffusion import Frame, NestedSession, nested_sample, vanilla_sample
from nested_diffusion.schedules import make_alphas_cumprod, spaced_timesteps


def noise(n=64, d=64, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


# -- identities ---------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_one_inner_step_is_vanilla_ddim(gmm, linear, eta, pred):
    """PAPER.md: nested(K outer, 1 inner) is exactly vanilla DDIM with K steps and η_outer."""
    model = gmm.model(linear, pred)
    nested = list(nested_sample(model, linear, noise(), prediction_type=pred, outer_steps=12, inner_steps=1,
                                outer_eta=eta, generator=gen()))
    vanilla = list(vanilla_sample(model, linear, noise(), prediction_type=pred, steps=12, sampler="ddim",
                                  eta=eta, generator=gen()))
    assert [f.nfe for f in nested] == [f.nfe for f in vanilla] == list(range(1, 13))
    assert [f.timestep for f in nested] == [f.timestep for f in vanilla] == spaced_timesteps(999, 12)
    for a, b in zip(nested, vanilla):
        torch.testing.assert_close(a.image, b.image, rtol=1e-10, atol=1e-10)


def test_frames_and_nfe_counts_are_exact(gmm, linear, counting):
    model = counting(gmm.model(linear))
    session = nested_sample(model, linear, noise(8), outer_steps=10, inner_steps=10, generator=gen())
    assert session.total_nfe == 100 and session.checkpoints() == list(range(10, 101, 10))
    for k, frame in enumerate(session, start=1):
        assert isinstance(frame, Frame)
        assert frame.nfe == model.calls == 10 * k
        assert frame.step == k and frame.num_steps == 10 and frame.image.shape == (8, 64)
        assert frame.is_final == (k == 10)
    assert session.done and model.calls == 100
    # inner grids: each starts at its outer timestep and descends to near 0
    assert model.timesteps[:10] == spaced_timesteps(999, 10)
    assert model.timesteps[90:] == spaced_timesteps(99, 10)


def test_inner_steps_capped_by_outer_timestep(gmm, counting):
    """An inner run started at τ costs min(M, τ + 1) NFEs."""
    ac = make_alphas_cumprod("linear", 50)
    model = counting(gmm.model(ac))
    session = nested_sample(model, ac, noise(4), outer_steps=25, inner_steps=8, generator=gen())
    expected = [min(8, tau + 1) for tau in spaced_timesteps(49, 25)]
    assert expected[-1] == 2  # the last outer timestep is τ = 1
    frames = list(session)
    assert [f.nfe for f in frames] == list(torch.tensor(expected).cumsum(0).tolist())
    assert model.calls == sum(expected) == session.total_nfe


def test_per_outer_step_inner_counts(gmm, linear, counting):
    model = counting(gmm.model(linear))
    frames = list(nested_sample(model, linear, noise(4), outer_steps=3, inner_steps=[5, 3, 1], generator=gen()))
    assert [f.nfe for f in frames] == [5, 8, 9] and model.calls == 9


# -- randomness, forks, conditions ---------------------------------------------------------
def test_same_seed_same_frames(gmm, linear):
    model = gmm.model(linear)
    a = list(nested_sample(model, linear, noise(), outer_steps=5, inner_steps=4, outer_eta=1.0, generator=gen(3)))
    b = list(nested_sample(model, linear, noise(), outer_steps=5, inner_steps=4, outer_eta=1.0, generator=gen(3)))
    c = list(nested_sample(model, linear, noise(), outer_steps=5, inner_steps=4, outer_eta=1.0, generator=gen(4)))
    assert all(torch.equal(x.image, y.image) for x, y in zip(a, b))
    assert not torch.allclose(a[-1].image, c[-1].image)


def test_caller_tensors_are_not_mutated(gmm, linear):
    x = noise(4)
    before = x.clone()
    list(nested_sample(gmm.model(linear), linear, x, outer_steps=3, inner_steps=3, generator=gen()))
    assert torch.equal(x, before)


def test_fork_branches_differ_only_through_noise(gmm, linear):
    model = gmm.model(linear)
    parent = nested_sample(model, linear, noise(), outer_steps=6, inner_steps=4, generator=gen())
    shared = [parent.step() for _ in range(2)]
    twin = parent.fork()  # copy of the generator state: identical continuation
    branch = parent.fork(generator=gen(99))  # fresh noise: a different continuation
    rest = list(parent)
    twin_frames, branch_frames = list(twin), list(branch)
    assert [f.nfe for f in twin_frames] == [f.nfe for f in branch_frames] == [f.nfe for f in rest] == [12, 16, 20, 24]
    assert all(torch.equal(a.image, b.image) for a, b in zip(twin_frames, rest))
    assert not torch.allclose(branch_frames[-1].image, rest[-1].image)
    assert shared[-1].nfe == 8


def test_fork_without_generator_continues_identically(gmm, linear):
    model = gmm.model(linear)
    parent = nested_sample(model, linear, noise(), outer_steps=6, inner_steps=4, generator=gen())
    parent.step()
    twin = parent.fork()
    for a, b in zip(parent, twin):
        assert torch.equal(a.image, b.image)


def test_condition_change_affects_only_later_frames(gmm, linear):
    model = gmm.model(linear)
    labels = torch.full((64,), 3)
    session = nested_sample(model, linear, noise(), outer_steps=6, inner_steps=4, generator=gen(),
                            model_kwargs={"class_labels": labels})
    reference = session.fork()
    early = [session.step() for _ in range(2)]
    session.model_kwargs["class_labels"] = torch.full((64,), 7)
    late = list(session)
    ref_frames = list(reference)
    for a, b in zip(early, ref_frames[:2]):
        assert torch.equal(a.image, b.image)
    assert not torch.allclose(late[0].image, ref_frames[2].image)
    # the final images now belong to component 7 (exact posterior responsibilities)
    final = late[-1].image
    assert gmm.frechet_distance(final, 7) < gmm.frechet_distance(final, 3)


def test_fork_with_indices_is_the_selected_batch(gmm, linear):
    """fork(indices=) before any step equals a session started from the selected noise rows with
    the selected per-image condition; shared kwargs (a 0-d tensor, a float) are kept."""
    gmm_model = gmm.model(linear)
    labels = torch.tensor([0, 3, 7, 9])
    kwargs = {"class_labels": labels, "unused": torch.tensor(1.0)}

    def model(x, t, class_labels, unused=None):
        return gmm_model(x, t, class_labels=class_labels)

    parent = nested_sample(model, linear, noise(4), outer_steps=4, inner_steps=3, generator=gen(), model_kwargs=kwargs)
    child = parent.fork(generator=gen(5), indices=[2, 0, 2])
    assert torch.equal(child.model_kwargs["class_labels"], torch.tensor([7, 0, 7]))
    assert child.model_kwargs["unused"] is kwargs["unused"] and parent.model_kwargs["class_labels"] is labels
    reference = nested_sample(model, linear, noise(4)[[2, 0, 2]], outer_steps=4, inner_steps=3, generator=gen(5),
                              model_kwargs={"class_labels": torch.tensor([7, 0, 7])})
    for a, b in zip(child, reference):
        torch.testing.assert_close(a.image, b.image, rtol=1e-12, atol=1e-12)
    assert child.nfe == 12 and parent.nfe == 0


def test_fork_with_indices_mid_run_keeps_state_rows(gmm, linear):
    """Mid-run, the child holds exactly the parent's rows (state, last frame); with a deterministic
    sampler (vanilla DPM-Solver++(2M), η = 0, whose carry holds the previous x̂0) its continuation
    is the parent's continuation of those rows."""
    model = gmm.model(linear)
    parent = vanilla_sample(model, linear, noise(5), steps=12, sampler="dpmpp-2m", eta=0.0, generator=gen())
    parent.run(max_nfe=4)
    child = parent.fork(indices=[4, 1])
    assert torch.equal(child.x, parent.x[[4, 1]]) and torch.equal(child.carry[0], parent.carry[0][[4, 1]])
    assert torch.equal(child.last_frame.image, parent.last_frame.image[[4, 1]]) and child.last_frame.nfe == 4
    a, b = list(parent)[-1], list(child)[-1]
    torch.testing.assert_close(b.image, a.image[[4, 1]], rtol=1e-12, atol=1e-12)
    for bad in ([], [5], [-1], [True], "01", 3):
        with pytest.raises(ValueError, match=r"indices must be a non-empty sequence of image indices in \[0, 4\]"):
            parent.fork(indices=bad)


def test_cancelled_step_leaves_the_session_unchanged(gmm, linear, counting):
    """A step cancelled through its token raises StepCancelled and commits nothing (state, NFEs,
    RNG); stepping again gives exactly the uninterrupted frames."""
    import threading

    from nested_diffusion.session import StepCancelled, StepInterrupted

    model = counting(gmm.model(linear))
    full = list(nested_sample(gmm.model(linear), linear, noise(4), outer_steps=3, inner_steps=4, generator=gen()))
    session = nested_sample(model, linear, noise(4), outer_steps=3, inner_steps=4, generator=gen())
    session.step()
    cancel = threading.Event()
    calls = model.calls

    def cancel_after_two(x, t, **kw):  # another thread's Stop, arriving during the second network call
        out = model(x, t, **kw)
        if model.calls - calls == 2:
            cancel.set()
        return out

    session.model = cancel_after_two
    with pytest.raises(StepCancelled):
        session.step(cancel=cancel)
    assert issubclass(StepCancelled, StepInterrupted) and model.calls == calls + 2
    assert session.nfe == 4 and session.k == 1 and session.last_frame.nfe == 4
    cancel.clear()
    frames = [session.step(cancel=cancel), session.step()]
    for a, b in zip(frames, full[1:]):
        assert torch.equal(a.image, b.image) and a.nfe == b.nfe
    with pytest.raises(TypeError, match="cancel"):
        nested_sample(model, linear, noise(4), generator=gen()).step(cancel=True)


# -- budgets ----------------------------------------------------------------------------------
def test_nfe_budget_returns_last_complete_frame_and_resumes(gmm, linear):
    model = gmm.model(linear)
    full = list(nested_sample(model, linear, noise(), outer_steps=10, inner_steps=10, outer_eta=1.0, generator=gen()))
    session = nested_sample(model, linear, noise(), outer_steps=10, inner_steps=10, outer_eta=1.0, generator=gen())
    frame = session.run(max_nfe=35)
    assert frame.nfe == 30 and session.nfe == 30 and not session.done
    assert torch.equal(frame.image, full[2].image)
    assert session.run().nfe == 100
    assert torch.equal(session.last_frame.image, full[-1].image)


def test_deadline_discards_the_interrupted_step(gmm, linear, fake_clock):
    base = gmm.model(linear)
    full = list(nested_sample(base, linear, noise(8), outer_steps=10, inner_steps=10, outer_eta=1.0, generator=gen()))
    clock = fake_clock
    session = nested_sample(clock.slow(base), linear, noise(8), outer_steps=10, inner_steps=10, outer_eta=1.0,
                            generator=gen())
    frame = session.run(deadline=35)  # the 4th outer step is cut after 5 of its 10 calls
    assert frame.nfe == 30 and session.nfe == 30 and clock.now == 35
    assert torch.equal(frame.image, full[2].image)
    # the interrupted step left no trace (state and RNG): resuming reproduces the full run
    assert torch.equal(session.run().image, full[-1].image)


def test_deadline_before_first_frame_returns_none(gmm, linear, fake_clock):
    clock = fake_clock
    session = nested_sample(clock.slow(gmm.model(linear)), linear, noise(2), outer_steps=2, inner_steps=10,
                            generator=gen())
    assert session.run(deadline=3) is None and session.nfe == 0 and session.last_frame is None
    assert list(session.frames(deadline=100))[-1].nfe == 20


def test_vanilla_session_budget_and_fork(gmm, linear):
    model = gmm.model(linear)
    s = vanilla_sample(model, linear, noise(), steps=20, sampler="dpmpp-2m", eta=0.0, generator=gen())
    assert s.run(max_nfe=7).nfe == 7
    twin = s.fork()
    a, b = list(s), list(twin)
    assert torch.equal(a[-1].image, b[-1].image) and a[-1].nfe == 20


def test_plan_schedule_puts_frames_at_the_budget_fractions(gmm, linear):
    from nested_diffusion.planner import plan_schedule

    assert plan_schedule(100) == [10, 10, 10, 20, 25, 25]
    assert plan_schedule(1) == [1] and plan_schedule(3) == [1, 1, 1]
    for budget in (1, 2, 7, 20, 33, 100, 250, 999):
        inner = plan_schedule(budget)
        assert sum(inner) == budget and min(inner) >= 1
    assert plan_schedule(50, (0.5, 1.0)) == [25, 25]
    # frames land exactly on 10, 20, 30, 50, 75, 100 NFEs (the inner-run cap never bites here)
    session = nested_sample(gmm.model(linear), linear, torch.randn(4, 64, dtype=torch.float64),
                            outer_steps=6, inner_steps=plan_schedule(100), inner_sampler="dpmpp-2m")
    assert session.checkpoints() == [10, 20, 30, 50, 75, 100]
    for bad in (dict(budget=0), dict(budget=10, fractions=(0.5, 0.4, 1.0)), dict(budget=10, fractions=(0.5,))):
        with pytest.raises(ValueError):
            plan_schedule(**bad)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(outer_steps=0), "outer_steps"),
    (dict(outer_steps=1001), "outer_steps"),
    (dict(inner_steps=0), "inner_steps"),
    (dict(inner_steps=2000), "inner_steps"),
    (dict(inner_steps=[1, 2]), "inner_steps"),
    (dict(inner_sampler="euler"), "inner_sampler"),
    (dict(prediction_type="x0"), "prediction_type"),
    (dict(inner_eta=-0.1), "eta"),
    (dict(outer_eta=1.5), "eta"),
])
def test_bad_arguments(gmm, linear, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nested_sample(gmm.model(linear), linear, noise(2), **kwargs)


def test_bad_tensors(gmm, linear):
    model = gmm.model(linear)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        nested_sample(model, linear[None], noise(2))
    with pytest.raises(ValueError, match="alphas_cumprod"):
        nested_sample(model, linear * 2, noise(2))
    bad = noise(2)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="noise"):
        nested_sample(model, linear, bad)
    with pytest.raises(TypeError, match="outer_steps"):
        nested_sample(model, linear, noise(2), outer_steps=2.5)
    with pytest.raises(TypeError, match="generator"):
        nested_sample(model, linear, noise(2), generator=0)
    with pytest.raises(ValueError, match="steps"):
        vanilla_sample(model, linear, noise(2), steps=0)
    with pytest.raises(ValueError, match="max_nfe"):
        nested_sample(model, linear, noise(2)).run(max_nfe=0)
    with pytest.raises(ValueError, match="deadline"):
        nested_sample(model, linear, noise(2)).run(deadline=-1)


def test_model_returning_wrong_shape(linear):
    session = nested_sample(lambda x, t: x[:, :3], linear, noise(2), outer_steps=2, inner_steps=2)
    with pytest.raises(ValueError, match="model returned shape"):
        next(session)
    assert session.nfe == 0 and session.last_frame is None


# -- outer grids, outer updates, per-step η (issue 12) ------------------------------------------
def test_explicit_outer_grid_sets_timesteps_and_nfe(gmm, linear, counting):
    model = counting(gmm.model(linear))
    session = nested_sample(model, linear, noise(4), outer_timesteps=[999, 300, 40, 5], inner_steps=[10, 10, 20, 20],
                            inner_sampler="dpmpp-2m", generator=gen())
    assert session.num_steps == 4 and session.outer_timesteps == [999, 300, 40, 5]
    frames = list(session)
    assert [f.timestep for f in frames] == [999, 300, 40, 5]
    assert [f.nfe for f in frames] == [10, 20, 40, 46] == session.checkpoints()  # the last run capped at τ+1 = 6
    assert model.timesteps[10:20] == spaced_timesteps(300, 10) and model.timesteps[40:] == spaced_timesteps(5, 20)


def test_default_grid_given_explicitly_changes_nothing(gmm, linear):
    model = gmm.model(linear)
    a = list(nested_sample(model, linear, noise(), outer_steps=5, inner_steps=4, generator=gen()))
    b = list(nested_sample(model, linear, noise(), outer_timesteps=spaced_timesteps(999, 5), inner_steps=4,
                           generator=gen()))
    assert all(torch.equal(x.image, y.image) for x, y in zip(a, b))


def test_renoise_outer_step_is_the_forward_process_from_the_frame(gmm, linear):
    """outer_update="renoise": the next inner run starts from √ᾱ' x̂0' + √(1-ᾱ') z, z drawn from the
    session's generator right after the inner run — reproduced here by hand."""
    from nested_diffusion.samplers import make_sampler, sample
    from nested_diffusion.schedules import to_denoised

    model, a = gmm.model(linear), linear.tolist()
    frames = list(nested_sample(model, linear, noise(), outer_timesteps=[999, 200], inner_steps=[5, 6],
                                inner_sampler="dpmpp-2m", inner_eta=[0.0, 0.5], outer_update="renoise",
                                generator=gen(7)))
    denoise = lambda x, t: to_denoised(model(x, torch.full((len(x),), t)), x, a[t], "epsilon")  # noqa: E731
    g = gen(7)
    first = sample(denoise, noise(), spaced_timesteps(999, 5), a, make_sampler("dpmpp-2m", 0.0), g)
    x = a[200] ** 0.5 * first + (1 - a[200]) ** 0.5 * torch.randn(first.shape, generator=g, dtype=first.dtype)
    second = sample(denoise, x, spaced_timesteps(200, 6), a, make_sampler("dpmpp-2m", 0.5), g)
    torch.testing.assert_close(frames[0].image, first, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(frames[1].image, second, rtol=1e-12, atol=1e-12)


def test_renoise_makes_an_exact_marginal_sampler_exact(counting):
    """With an exact sampler of p(x0) inside (a one-Gaussian prior: x̂0 at t = 0 of a 1-step run from
    τ = 0 is not exact, so use the exact posterior sample directly), the renoised outer state has
    exactly the marginal of x_τ': mean √ᾱ' μ, covariance ᾱ'Σ + (1-ᾱ')I."""
    from nested_diffusion.nested import renoise

    torch.manual_seed(0)
    mu, std, a = torch.tensor([0.5, -1.0]), torch.tensor([0.3, 2.0]), 0.3
    x0 = mu + std * torch.randn(200_000, 2, dtype=torch.float64)
    x = renoise(x0, a, torch.Generator().manual_seed(1))
    torch.testing.assert_close(x.mean(0), a ** 0.5 * mu.double(), atol=0.01, rtol=0)
    torch.testing.assert_close(x.var(0), a * std.double() ** 2 + 1 - a, atol=0.02, rtol=0)
    assert torch.equal(renoise(x0[:3], 1.0), x0[:3])


def test_per_step_inner_eta(gmm, linear):
    """η = 0 for the first inner run makes the first frame independent of the generator."""
    model = gmm.model(linear)
    kw = dict(outer_timesteps=[999, 300, 80], inner_steps=4, inner_sampler="dpmpp-2m", inner_eta=[0.0, 0.85, 0.85],
              outer_update="renoise")
    a = list(nested_sample(model, linear, noise(), generator=gen(1), **kw))
    b = list(nested_sample(model, linear, noise(), generator=gen(2), **kw))
    assert torch.equal(a[0].image, b[0].image) and not torch.allclose(a[1].image, b[1].image)
    session = nested_sample(model, linear, noise(), **kw)
    assert [s.eta for s in session.inner_samplers] == [0.0, 0.85, 0.85]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(outer_timesteps=[999, 999]), ValueError, "strictly"),
    (dict(outer_timesteps=[1000, 10]), ValueError, r"\[0, 999\]"),
    (dict(outer_timesteps=[999, -1]), ValueError, "strictly"),
    (dict(outer_timesteps=[999.0, 10]), TypeError, "integers"),
    (dict(outer_timesteps=[]), TypeError, "non-empty"),
    (dict(outer_timesteps=[999, 10], outer_steps=3), ValueError, "len\\(outer_timesteps\\)"),
    (dict(outer_update="restart"), ValueError, "outer_update must be one of"),
    (dict(outer_steps=3, inner_eta=[0.0, 0.5]), ValueError, "inner_eta as a sequence"),
    (dict(outer_steps=2, inner_eta=[0.0, 1.5]), ValueError, "eta must lie"),
])
def test_bad_outer_arguments(gmm, linear, kwargs, error, match):
    with pytest.raises(error, match=match):
        nested_sample(gmm.model(linear), linear, noise(2), **kwargs)


# -- the planned layout --------------------------------------------------------------------------
def test_plan_layout_follows_the_schedule(gmm, counting):
    from nested_diffusion.defaults import PLAN_FIRST_RESTART_LEVEL
    from nested_diffusion.planner import default_outer_sigmas, outer_timesteps_at_sigmas, plan_layout, restart_noise_level

    for schedule in ("linear", "scaled_linear", "cosine"):
        ac = make_alphas_cumprod(schedule)
        sigma = ((1 - ac) / ac).sqrt()
        for budget in (20, 30, 50, 100):
            layout = plan_layout(budget, ac)
            taus, inner = layout.outer_timesteps, layout.inner_steps
            assert taus[0] == 999 and all(x > y for x, y in zip(taus, taus[1:]))
            # each later outer timestep is the last one at or below the restart level of the NFEs spent so far
            # (the first restart at least PLAN_FIRST_RESTART_LEVEL's)
            levels = default_outer_sigmas(budget, ac)
            for k, (tau, spent, s) in enumerate(zip(taus[1:], itertools.accumulate(inner), levels)):
                assert s == (max(restart_noise_level(spent), restart_noise_level(spent, PLAN_FIRST_RESTART_LEVEL))
                             if k == 0 else restart_noise_level(spent))
                assert sigma[tau] <= s < sigma[tau + 1]
            assert levels[0] == max(restart_noise_level(inner[0]), min(8.0, 175 * inner[0] ** -2.0)) > levels[1]
            assert (layout.inner_sampler, layout.inner_eta, layout.outer_update) == ("unipc", None, "renoise")
            # the first run on a log-SNR grid where the top is not too noisy and it has 3+ steps; restarts on
            # log-SNR grids from σ/α >= 2.5, Karras grids below
            head = "logsnr" if inner[0] >= 3 and schedule != "cosine" else "trailing"
            assert layout.inner_spacing == (head,) + tuple("logsnr" if sigma[t] >= 2.5 else "karras" for t in taus[1:])
        model = counting(gmm.model(ac))
        session = nested_sample(model, ac, noise(2), generator=gen(), **layout.session_kwargs())
        assert session.run().nfe == model.calls == layout.nfe == 100
        assert session.inner_spacing == list(layout.inner_spacing)
    # the same noise level is a different timestep on each schedule
    levels = [outer_timesteps_at_sigmas(make_alphas_cumprod(s), [1.0])[1] for s in ("linear", "scaled_linear", "cosine")]
    assert levels == [258, 353, 495]
    # the measured grids (BENCHMARKS.md §12)
    linear = make_alphas_cumprod("linear")
    assert [plan_layout(b, linear).outer_timesteps for b in (20, 30, 50, 100)] == [
        [999, 640, 372], [999, 640, 311], [999, 619, 311, 237, 183], [999, 372, 268, 212, 152, 114]]
    assert plan_layout(100, make_alphas_cumprod("cosine")).outer_timesteps == [999, 670, 512, 416, 304, 231]
    # a short schedule gives fewer, still decreasing outer steps
    short = plan_layout(10, make_alphas_cumprod("linear", 4))
    assert short.outer_timesteps[0] == 3 and short.nfe <= 10
    with pytest.raises(ValueError, match="budget"):
        plan_layout(0, make_alphas_cumprod("linear"))
    with pytest.raises(ValueError, match="sigmas"):
        outer_timesteps_at_sigmas(make_alphas_cumprod("linear"), [1.0, -2.0])


def test_plan_frames_and_restart_levels_follow_the_budget():
    """Fewer, better frames at small budgets (a run of at least PLAN_MIN_RUN NFEs after the first, which lands
    by 10 % of the budget); restart levels a continuous, falling function of the NFEs spent."""
    from nested_diffusion.defaults import PLAN_MIN_RUN, PLAN_RESTART_LEVEL
    from nested_diffusion.planner import default_outer_sigmas, plan_frames, plan_schedule, restart_noise_level

    assert plan_frames(20) == [2, 8, 10] and plan_frames(30) == [3, 12, 15] and plan_frames(50) == [5, 10, 10, 13, 12]
    assert plan_frames(100) == plan_schedule(100) == [10, 10, 10, 20, 25, 25] and plan_frames(1000) == plan_schedule(1000)
    assert plan_frames(20, min_run=1) == plan_schedule(20)
    for budget in range(1, 20):  # below 20 NFEs (not measured) the whole ladder
        assert plan_frames(budget) == plan_schedule(budget)
    for budget in range(20, 301):
        inner = plan_frames(budget)
        assert sum(inner) == budget and inner[0] == plan_schedule(budget)[0] <= round(0.1 * budget)
        assert len(inner) >= 3 and all(m >= PLAN_MIN_RUN for m in inner[1:])
    a, p, lo, hi = PLAN_RESTART_LEVEL
    assert restart_noise_level(10) == pytest.approx(a * 10 ** -p)
    assert restart_noise_level(1) == hi and restart_noise_level(10 ** 6) == lo
    levels = [restart_noise_level(n) for n in range(1, 2000)]
    assert all(x >= y for x, y in zip(levels, levels[1:]))
    assert default_outer_sigmas(20) == (8.0, restart_noise_level(10))  # the first restart redoes coarse scales
    assert default_outer_sigmas(50)[0] == 7.0 and default_outer_sigmas(100)[0] == restart_noise_level(10)  # 1.78
    assert len(default_outer_sigmas(100)) == 5 and default_outer_sigmas(1) == ()
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="spent"):
            restart_noise_level(bad)
    with pytest.raises(ValueError, match="min_run"):
        plan_frames(20, min_run=0)


def test_resolve_layout_is_the_one_rule(linear):
    """The one function that fills in a partial layout, rule by rule (its docstring's list)."""
    from nested_diffusion import resolve_layout
    from nested_diffusion.planner import plan_layout

    def counts(**kw):
        layout = resolve_layout(linear, **kw)
        return len(layout.inner_steps), layout.inner_steps

    cosine = make_alphas_cumprod("cosine")
    # nothing of the grid given: the planned layout for the budget (default 100) and this schedule
    assert resolve_layout(linear) == plan_layout(100, linear)
    assert resolve_layout(cosine, budget=50) == plan_layout(50, cosine)
    assert counts() == (6, [10, 10, 10, 20, 25, 25]) and counts(budget=20) == (3, [2, 8, 10])
    assert resolve_layout(linear).outer_timesteps != resolve_layout(cosine).outer_timesteps
    # explicit choices replace the plan's; an outer η needs the DDIM outer step, asked for explicitly
    assert resolve_layout(linear, inner_eta=0.5).inner_eta == 0.5
    assert resolve_layout(linear, inner_eta=0.5).inner_sampler == "dpmpp-2m"  # an η for the default sampler
    assert resolve_layout(linear, inner_sampler="ddim").inner_sampler == "ddim"
    assert resolve_layout(linear, inner_sampler="ddim").inner_spacing == plan_layout(100, linear).inner_spacing
    assert resolve_layout(linear, inner_sampler="ddpm").inner_eta is None  # the sampler's own η, not the plan's
    ddim = resolve_layout(linear, outer_update="ddim", outer_eta=0.3)
    assert (ddim.outer_update, ddim.outer_eta, ddim.outer_timesteps) == ("ddim", 0.3, plan_layout(100, linear).outer_timesteps)
    with pytest.raises(ValueError, match="outer_eta .* re-noises .*planned.*outer_update='ddim'"):
        resolve_layout(linear, outer_eta=0.3)
    with pytest.raises(ValueError, match="outer_eta"):
        resolve_layout(linear, outer_steps=4, outer_update="renoise", outer_eta=0.3)
    # counts given: the other from the budget or 10, uniform grid, DDIM outer step (η 1), DPM-Solver++(2M) inner
    assert counts(outer_steps=5) == (5, [10] * 5) and counts(inner_steps=4) == (10, [4] * 10)
    assert counts(inner_steps=4, budget=40) == (10, [4] * 10) and counts(outer_steps=4, budget=41) == (4, [10] * 4)
    assert counts(inner_steps=[3, 2, 1]) == (3, [3, 2, 1]) and counts(outer_steps=3, inner_steps=5, budget=20) == (3, [5] * 3)
    paper = resolve_layout(linear, outer_steps=10, inner_steps=10)
    assert paper.session_kwargs() == dict(outer_timesteps=list(range(999, 0, -100)), inner_steps=[10] * 10,
                                          inner_sampler="dpmpp-2m", inner_eta=0.85, outer_update="ddim", outer_eta=1.0)
    # outer times given: one outer step each, 10 inner steps unless given
    assert resolve_layout(linear, outer_timesteps=[999, 100]).inner_steps == [10, 10]
    with pytest.raises(ValueError, match="one inner count per outer step"):
        resolve_layout(linear, outer_steps=2, inner_steps=[3, 2, 1])
    with pytest.raises(ValueError, match=r"budget 5 is smaller than one outer step \(inner_steps = 10 NFEs\)"):
        resolve_layout(linear, inner_steps=10, budget=5)
    with pytest.raises(ValueError, match="budget must be a positive integer"):
        resolve_layout(linear, budget=0)
    with pytest.raises(ValueError, match="outer_steps must be an integer in \\[1, 1000\\]"):
        resolve_layout(linear, outer_steps=0)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_plan_layout_spends_the_budget(schedule, counting, gmm):
    """Low restarts would cap long inner runs (a run of M steps from τ costs min(M, τ + 1)): the plan
    raises them so every budget is spent exactly, with a strictly decreasing grid."""
    from nested_diffusion.planner import plan_layout

    ac = make_alphas_cumprod(schedule)
    for budget in (1, 7, 20, 50, 99, 100, 137, 200, 500, 1000, 3000):
        layout = plan_layout(budget, ac)
        taus = layout.outer_timesteps
        assert layout.nfe == budget, (budget, taus, layout.inner_steps)
        assert taus[0] == 999 and all(x > y >= 0 for x, y in zip(taus, taus[1:]))
    model = counting(gmm.model(ac))
    layout = plan_layout(1000, ac)
    assert nested_sample(model, ac, noise(1), generator=gen(), **layout.session_kwargs()).run().nfe == model.calls == 1000


def test_inner_spacing_grids_each_run(gmm, linear, counting):
    """inner_spacing names each inner run's grid (schedule.replace(spacing=...)): a renoising session equals
    the same runs made one by one on those grids; the NFEs are the grids' lengths; bad names are refused."""
    from nested_diffusion.samplers import Renoise
    from nested_diffusion.schedules import DiscreteVP
    from nested_diffusion.vanilla import VanillaSession

    vp = DiscreteVP(linear)
    model = counting(gmm.model(linear))
    spacing, outer, inner = ["trailing", "logsnr", "karras"], [999, 250, 60], [3, 4, 5]
    session = nested_sample(model, linear, noise(16), outer_timesteps=outer, inner_steps=inner, inner_sampler="unipc",
                            outer_update="renoise", inner_spacing=spacing, generator=gen())
    frames = list(session)
    assert session.inner_spacing == spacing and [f.nfe for f in frames] == [3, 7, 12] == [
        sum(inner[:k + 1]) for k in range(3)] and model.calls == 12
    g, x, images = gen(), noise(16), []
    for k, (tau, m, sp) in enumerate(zip(outer, inner, spacing)):
        grid = vp.replace(spacing=sp).inner_timesteps(tau, m)
        assert grid == session._inner_grids[k]
        image = VanillaSession(gmm.model(linear), vp, x, steps=m, timesteps=grid, sampler="unipc", eta=None,
                               generator=g).run().image
        images.append(image)
        if k + 1 < len(outer):
            x = Renoise().step(image, image, vp.level(tau), vp.level(outer[k + 1]), None, g)[0]
    for frame, image in zip(frames, images):
        torch.testing.assert_close(frame.image, image, rtol=1e-12, atol=1e-12)
    same = nested_sample(gmm.model(linear), linear, noise(4), outer_steps=2, inner_steps=4, inner_spacing="logsnr")
    assert same.inner_spacing == ["logsnr", "logsnr"]
    with pytest.raises(ValueError, match="inner_spacing: spacing must be one of"):
        nested_sample(gmm.model(linear), linear, noise(4), outer_steps=2, inner_steps=4, inner_spacing="leading")
    with pytest.raises(ValueError, match="one entry per outer step"):
        nested_sample(gmm.model(linear), linear, noise(4), outer_steps=2, inner_steps=4, inner_spacing=["logsnr"])


def test_inner_grid_end_ends_each_noise_spaced_run(gmm, linear, counting):
    """inner_grid_end ends the Karras and log-SNR inner grids at that noise level (schedule.replace(grid_end=...)),
    trailing runs as they were; the NFEs are the grids' lengths; the plan sets PLAN_GRID_END and every entry point
    replays it; a bad end is refused by name."""
    from nested_diffusion.defaults import PLAN_GRID_END
    from nested_diffusion.planner import plan_layout, resolve_layout
    from nested_diffusion.schedules import DiscreteVP

    vp = DiscreteVP(linear)
    model = counting(gmm.model(linear))
    spacing, outer, inner = ["trailing", "logsnr", "karras"], [999, 250, 60], [3, 4, 5]
    session = nested_sample(model, linear, noise(8), outer_timesteps=outer, inner_steps=inner, inner_sampler="unipc",
                            outer_update="renoise", inner_spacing=spacing, inner_grid_end=0.03, generator=gen())
    assert session._inner_grids == [vp.replace(spacing=sp, grid_end=0.03).inner_timesteps(t, m)
                                    for t, m, sp in zip(outer, inner, spacing)]
    assert session._inner_grids[0] == vp.inner_timesteps(999, 3) and [g[-1] for g in session._inner_grids] == [332, 5, 5]
    assert session.run().nfe == model.calls == 12
    # the plan: its runs end at PLAN_GRID_END, on VP as on flow
    assert PLAN_GRID_END == 0.03
    for budget in (20, 50, 100):
        layout = plan_layout(budget, linear)
        assert layout.inner_grid_end == PLAN_GRID_END and layout.session_kwargs()["inner_grid_end"] == PLAN_GRID_END
        planned = nested_sample(gmm.model(linear), linear, noise(2), generator=gen(), **layout.session_kwargs())
        for grid, tau, m, sp in zip(planned._inner_grids, layout.outer_timesteps, layout.inner_steps,
                                    layout.inner_spacing):
            assert grid == (vp.inner_timesteps(tau, m) if sp == "trailing" else
                            vp.replace(spacing=sp, grid_end=0.03).inner_timesteps(tau, m)) and grid[-1] != 0
        assert layout.checkpoints(linear)[-1] == layout.nfe == budget
    assert resolve_layout(linear).inner_grid_end == PLAN_GRID_END
    assert resolve_layout(linear, inner_spacing="karras").inner_grid_end == PLAN_GRID_END
    assert resolve_layout(linear, inner_grid_end=0.1).inner_grid_end == 0.1
    assert resolve_layout(linear, outer_steps=4, inner_steps=5).inner_grid_end is None
    with pytest.raises(ValueError, match="inner_grid_end must be a positive noise level"):
        nested_sample(gmm.model(linear), linear, noise(4), outer_steps=2, inner_steps=4, inner_grid_end=-1.0)
