"""Restoration as a user meets it: NestedPipeline.restore, `nested-diffusion restore` and
`evaluate --task` (values against direct computations on the exact posterior oracle)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from nested_diffusion import NestedPipeline, ddrm_sample, nested_restore
from nested_diffusion.cli import main
from nested_diffusion.evaluation import (EvalConfig, RestorationTarget, evaluate, load_target, make_metric,
                                         parse_method, sample_generators)
from nested_diffusion.samplers import randn_like
from nested_diffusion.restoration import Inpainting, SuperResolution, make_operator, residual_ratio
from nested_diffusion.restoration.tasks import box_mask, gaussian_kernel, random_mask


@pytest.fixture(scope="module")
def digits():
    return NestedPipeline.from_pretrained()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_pipeline_restore_is_the_core_session_on_the_adapter(digits):
    a = digits.adapter
    truth = torch.rand(2, 1, 28, 28, generator=gen(1))
    op = make_operator("sr4", (1, 28, 28))
    y = op.measure(truth * 2 - 1, 0.05, gen(2))
    frames = list(digits.restore(operator=op, sigma_y=0.05, measurement=y, budget=10, generator=gen(3),
                                 output_type="latent"))
    g = gen(3)
    noise = torch.randn(2, 1, 28, 28, generator=g)
    model_kwargs = a.condition(2)  # unconditional: the null class, no guidance
    with torch.inference_mode():
        core = list(nested_restore(a, a.schedule, noise, operator=op, measurement=y, sigma_y=0.05,
                                   inner_steps=[1, 1, 1, 2, 3, 2], generator=g, model_kwargs=model_kwargs))
    assert [f.nfe for f in frames] == [f.nfe for f in core] == [1, 2, 3, 5, 8, 10]
    for f, c in zip(frames, core):
        assert torch.equal(f.images, c.image)
    ddrm = list(digits.restore(operator=op, sigma_y=0.05, measurement=y, method="ddrm", steps=7, output_type="latent"))
    assert [f.nfe for f in ddrm] == list(range(1, 8))


def test_the_observed_image_is_y_or_is_measured(digits):
    """An image in the measurement's shape is y itself; one in the model's shape is measured by H."""
    full = torch.rand(1, 1, 28, 28, generator=gen(4))
    sr = SuperResolution(4)
    small = torch.nn.functional.avg_pool2d(full, 4)
    for image in (full, small, Image.fromarray((small[0, 0].numpy() * 255).round().astype(np.uint8))):
        y = digits.restore(image, sr, 0.0, outer_steps=1, inner_steps=1).core.problem.measurement
        torch.testing.assert_close(y, small * 2 - 1, atol=2 / 255, rtol=0)
    mask = box_mask((1, 28, 28), "bottom")
    y = digits.restore(full, Inpainting(mask), 0.05, outer_steps=1, inner_steps=1).core.problem.measurement
    torch.testing.assert_close(y, (full * 2 - 1)[:, mask])
    # one measurement, several restorations: posterior samples of the same y
    s = digits.restore(small, sr, 0.05, num_images=3, outer_steps=2, inner_steps=2, generator=gen(5), output_type="pt")
    assert torch.equal(s.core.problem.measurement[0], s.core.problem.measurement[2])
    out = s.run().images
    assert out.shape == (3, 1, 28, 28) and not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(image=torch.rand(1, 1, 9, 9)), ValueError, r"expected the measurement's \(1, 7, 7\)"),
    (dict(image=torch.rand(1, 3, 7, 7)), ValueError, "1 channel"),
    (dict(image=torch.rand(1, 1, 7, 7) * 2), ValueError, r"in \[0, 1\]"),
    (dict(image=None), ValueError, "exactly one of image"),
    (dict(image=torch.rand(1, 1, 7, 7), measurement=torch.zeros(1, 1, 7, 7)), ValueError, "exactly one of image"),
    (dict(measurement=torch.zeros(1, 1, 8, 8)), ValueError, "measurement must have shape"),
    (dict(measurement=torch.full((1, 1, 7, 7), float("nan"))), ValueError, "NaN"),
    (dict(image=torch.rand(1, 1, 7, 7), sigma_y=-1.0), ValueError, "sigma_y"),
    (dict(image=torch.rand(1, 1, 7, 7), operator="sr4"), TypeError, "operator must be"),
    (dict(image=torch.rand(1, 1, 7, 7), method="ddrm", budget=10), ValueError, "DDRM takes steps"),
    (dict(image=torch.rand(2, 1, 7, 7), num_images=3), ValueError, "number of measurements"),
])
def test_bad_restore_arguments_fail_before_any_network_call(digits, kwargs, error, match):
    calls = []
    handle = digits.adapter.unet.register_forward_hook(lambda *a: calls.append(1))
    args = {"operator": SuperResolution(4), "sigma_y": 0.05, **kwargs}
    try:
        with pytest.raises(error, match=match):
            digits.restore(**args)
    finally:
        handle.remove()
    assert calls == []


def test_latent_pipelines_say_why_they_cannot_restore(digits):
    class LatentStub:
        family, pixel_space = "stable-diffusion", False

    with pytest.raises(ValueError, match="pixel-space model.*VAE decoder is nonlinear"):
        NestedPipeline(LatentStub()).restore(torch.rand(1, 3, 8, 8), SuperResolution(2), 0.05)


def test_tasks_build_their_operators():
    shape = (1, 28, 28)
    assert make_operator("inpaint-box", shape, box="top").mask[0, :14].sum() == 0
    assert make_operator("inpaint-box", shape, box="center").num_observed == 28 * 28 - 14 * 14
    assert random_mask(shape, 0.5, seed=3).sum() == 392 and torch.equal(random_mask(shape, seed=3), random_mask(shape, seed=3))
    assert make_operator("sr2", shape)(torch.zeros(1, *shape)).shape == (1, 1, 14, 14)
    k = gaussian_kernel(1.0)
    assert len(k) == 7 and float(k.sum()) == pytest.approx(1.0) and k.argmax() == 3
    assert make_operator("dense", (1, 8, 8)).matrix((1, 8, 8)).shape == (20, 64)
    for task, shape_, match in (("colorize", shape, "RGB"), ("sr4", (1, 30, 30), "multiple of 4"),
                                ("dense", (3, 64, 64), "at most 4096"),
                                ("blur", shape, "task must be one of")):
        with pytest.raises(ValueError, match=match):
            make_operator(task, shape_)


# -- the command line ----------------------------------------------------------------------------------
def restore_cli(*args):
    return main(["restore", *map(str, args)])


def test_restore_cli_on_held_out_digits(tmp_path, capsys):
    out = tmp_path / "r"
    assert restore_cli("--task", "inpaint-box", "--box", "top", "--digits", 3, "--budget", 10, "--compare-ddrm",
                       "--check", "--out", out) == 0
    printed = capsys.readouterr().out
    assert "restore inpaint-box: 6 frames × 3 images (10 NFEs" in printed and "check (nested)" in printed
    names = sorted(p.name for p in (out / "frames" / "sample-00").iterdir())
    assert names == ["ddrm-nfe-001.png", "ddrm-nfe-002.png", "ddrm-nfe-003.png", "ddrm-nfe-005.png", "ddrm-nfe-008.png",
                     "ddrm-nfe-010.png", "measurement.png", "nested-nfe-001.png", "nested-nfe-002.png",
                     "nested-nfe-003.png", "nested-nfe-005.png", "nested-nfe-008.png", "nested-nfe-010.png", "truth.png"]
    with Image.open(out / "frames" / "sample-01" / "truth.png") as im:
        from nested_diffusion.data import load_mnist5k

        images, labels = load_mnist5k("test")
        assert np.array_equal(np.asarray(im), images[np.flatnonzero(labels == 1)[0]])  # one digit per class
    run = json.loads((out / "run.json").read_text())
    assert run["nfe"] == [1, 2, 3, 5, 8, 10] and run["class_labels"] == [0, 1, 2] and run["digits"] == 3
    quality = run["quality"]["nested"]
    assert len(quality["residual_ratio"]) == 6 and len(quality["psnr"]) == 6 and run["check"]["ddrm"]["total"] == 3
    with Image.open(out / "anytime.gif") as gif:
        assert gif.n_frames == 6


def test_restore_cli_on_an_input_image(tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (7, 7), dtype=np.uint8)).save(small)
    out = tmp_path / "up"
    assert restore_cli("--task", "sr4", "--input", small, "--num-images", 2, "--outer", 2, "--inner", 2,
                       "--sigma-y", 0.02, "--out", out) == 0
    with Image.open(out / "frames" / "sample-01" / "nested-nfe-004.png") as im:
        assert im.size == (28, 28)
    assert not (out / "frames" / "sample-00" / "truth.png").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["input"] == str(small) and run["digits"] is None and len(run["quality"]["nested"]["residual_ratio"]) == 2


@pytest.mark.parametrize("args, words", [
    (["--task", "colorize"], "needs an RGB model"),
    (["--task", "sr4", "--input", "missing.png"], "is not a file"),
    (["--task", "sr4", "--input", "x.png", "--digits", 2], "not both"),
    (["--task", "sr4", "--digits", 501], "at most 500"),
    (["--task", "deblur", "--budget", 5, "--inner", 10], "--budget 5 is smaller than one outer step (--inner"),
])
def test_restore_cli_bad_input_leaves_nothing(tmp_path, capsys, args, words):
    (tmp_path / "x.png").write_bytes(b"")
    out = tmp_path / "out"
    assert restore_cli(*args, "--out", out) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


# -- evaluate --task --------------------------------------------------------------------------------------
def test_evaluate_task_values_equal_direct_restoration_on_the_oracle(tmp_path, gmm):
    target = RestorationTarget(load_target("gmm"), "inpaint-random", 0.05, seed=2)
    mask = random_mask((1, 8, 8), 0.5, seed=2)
    assert torch.equal(target.operator.mask, mask)
    g = gen(2)
    x0 = gmm.sample(1, g)[0].reshape(1, 1, 8, 8)
    y = Inpainting(mask).measure(x0, 0.05, g)
    posterior = gmm.posterior(Inpainting(mask), y[0], 0.05)
    assert torch.equal(target.measurement(range(3))[2], y[0])
    methods = [parse_method("nested", "4x5:ddrm"), parse_method("vanilla", "ddrm", budget=20),
               parse_method("envelope", "ddrm:1"), parse_method("envelope", "ddrm:0.5")]
    metrics = [make_metric("gmm-fd"), make_metric("residual")]
    result = evaluate(target, methods, metrics, EvalConfig(40, (5, 20), batch_size=40, seed=3), tmp_path)
    g = sample_generators(3, range(40))  # one generator per sample
    noise = randn_like(torch.empty(40, 1, 8, 8, dtype=torch.float64), g)
    frames = list(nested_restore(target.base.model, target.base.schedule, noise, operator=Inpainting(mask),
                                 measurement=y.expand(40, -1), sigma_y=0.05, outer_steps=4, inner_steps=5, generator=g))
    name = "nested-4x5-ddrm-eta0.95"
    assert result.value(name, 5, "gmm-fd") == pytest.approx(posterior.frechet_distance(frames[0].image), rel=1e-9)
    assert result.value(name, 20, "residual") == pytest.approx(
        residual_ratio(Inpainting(mask), frames[-1].image, y.expand(40, -1), 0.05), rel=1e-9)
    g = sample_generators(3, range(40))  # one generator per sample
    noise = randn_like(torch.empty(40, 1, 8, 8, dtype=torch.float64), g)
    final = list(ddrm_sample(target.base.model, target.base.schedule, noise, operator=Inpainting(mask),
                             measurement=y.expand(40, -1), sigma_y=0.05, steps=5, eta=1.0, generator=g))[-1]
    assert result.value("envelope-ddrm-eta1", 5, "gmm-fd") == pytest.approx(posterior.frechet_distance(final.image), rel=1e-9)
    # the residual's envelope-best is the envelope closest to 1, not the smallest
    for c in (5, 20):
        values = [result.value(f"envelope-ddrm-eta{e}", c, "residual") for e in ("1", "0.5")]
        assert result.value("envelope-best", c, "residual") == min(values, key=lambda v: abs(v - 1))


def test_evaluate_task_on_digits_and_its_errors(tmp_path, capsys):
    out = tmp_path / "e"
    assert main([str(a) for a in ["evaluate", "--task", "sr4", "--num-samples", 4, "--per-measurement", 2, "--budget", 2,
                                  "--checkpoints", "2", "--nested", "1x2:ddrm", "--no-envelope",
                                  "--metric", "accuracy,residual,psnr,psnr-mean", "--quiet", "--out", out]]) == 0
    printed = capsys.readouterr().out
    assert "residual (1 is ideal)" in printed and "psnr-mean (higher is better)" in printed
    rows = {(r["method"], r["metric"]): r["value"] for r in json.loads((out / "results.json").read_text())["rows"]}
    assert 0 <= rows[("nested-1x2-ddrm-eta0.95", "accuracy")] <= 1 and rows[("vanilla-ddrm-eta0.85-2", "psnr")] > 5
    for args, words in ((["--task", "sr4", "--vanilla", "ddim:1"], "use the sampler 'ddrm'"),
                        (["--nested", "2x2:ddrm"], "needs a task")):
        bad = tmp_path / "bad"
        assert main([str(a) for a in ["evaluate", "--num-samples", 4, "--budget", 2, "--quiet", "--out", bad, *args]]) == 2
        assert words in capsys.readouterr().err
        assert not bad.exists()


def test_psnr_mean_groups_the_samples_of_one_measurement():
    from nested_diffusion.evaluation.backends import PSNRMean

    class Target:
        def measurement_ids(self, rows):
            return [i // 2 for i in rows]

        def truth_pixels(self, rows):
            return torch.zeros(len(rows), 1, 2, 2)

    metric = PSNRMean()
    metric.target = Target()
    pixels = torch.tensor([0.2, 0.0, 0.1, 0.1]).reshape(4, 1, 1, 1).expand(4, 1, 2, 2)
    features = metric.features(pixels, None, None, None, range(4))
    # measurement 0: mean 0.1 → MSE 0.01 → 20 dB; measurement 1: mean 0.1 → 20 dB
    assert metric.score(features) == pytest.approx(20.0)


def test_restore_cli_with_a_user_mask(tmp_path, capsys):
    picture, mask = tmp_path / "picture.png", tmp_path / "mask.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28), dtype=np.uint8)).save(picture)
    holes = np.full((28, 28), 255, dtype=np.uint8)
    holes[10:20, 5:15] = 0
    Image.fromarray(holes).save(mask)
    out = tmp_path / "filled"
    assert restore_cli("--task", "inpaint-mask", "--mask", mask, "--input", picture, "--outer", 2, "--inner", 1,
                       "--out", out) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["operator"] == "Inpainting(observed 684/784)"
    with Image.open(out / "frames" / "sample-00" / "measurement.png") as im:  # H⁺y: the holes are mid-gray
        assert (np.asarray(im)[10:20, 5:15] == 128).all()
    for args, words in ((["--task", "inpaint-mask", "--input", picture], "needs one"),
                        (["--task", "sr4", "--mask", mask], "goes with --task inpaint-mask")):
        assert restore_cli(*args, "--out", tmp_path / "bad") == 2
        assert words in capsys.readouterr().err


def test_a_measurement_changed_mid_run(digits):
    """Restoration's set_measurement (an inpainting mask edited mid-run): the frames before the change are the
    plain run's; from the next step every frame keeps the newly observed pixels exactly (σ_y = 0); the same
    measurement again changes no number; a fork taken before keeps its own; DDRM sessions take it too."""
    truth = torch.rand(1, 1, 28, 28, generator=gen(4)) * 2 - 1
    top, left = torch.zeros(1, 28, 28, dtype=torch.bool), torch.zeros(1, 28, 28, dtype=torch.bool)
    top[:, :14], left[:, :, :14] = True, True
    first, second = Inpainting(top), Inpainting(left)
    common = dict(measurement=first(truth), sigma_y=0.0, budget=20, class_labels=[3], num_images=2,
                  output_type="latent")
    plain = list(digits.restore(operator=first, generator=gen(5), **common))
    session = digits.restore(operator=first, generator=gen(5), **common)
    before = [session.step(), session.step()]
    branch = session.fork()
    same = session.fork()
    same.core.set_measurement(first(truth))  # one measurement for both images: expanded
    assert [torch.equal(f.latents, p.latents) for f, p in zip([*before, *same], plain)] == [True] * len(plain)
    session.core.set_measurement(second(truth), operator=second)
    after = list(session)
    assert [f.nfe for f in before + after] == [f.nfe for f in plain]
    for frame in after:
        assert torch.equal(frame.latents[:, :, :, :14], truth[:, :, :, :14].expand(2, -1, -1, -1))
        assert (frame.latents[:, :, 14:, 14:] - truth[:, :, 14:, 14:]).abs().max() > 0.1  # unobserved now
    assert session.core.problem.operator is second and branch.core.problem.operator is first
    for frame in branch:  # the fork restores the first measurement
        assert torch.equal(frame.latents[:, :, :14], truth[:, :, :14].expand(2, -1, -1, -1))
    ddrm = digits.restore(operator=first, measurement=first(truth), sigma_y=0.0, method="ddrm", steps=10,
                          generator=gen(6), output_type="latent")
    ddrm.step()
    ddrm.core.set_measurement(second(truth), operator=second)
    assert torch.equal(ddrm.run().latents[:, :, :, :14], truth[:, :, :, :14])
    with pytest.raises(ValueError, match="measurement must have shape"):
        session.core.set_measurement(truth.reshape(1, -1), operator=second)
    assert session.core.problem.operator is second  # a refused measurement changes nothing
