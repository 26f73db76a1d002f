"""The inpainting-vs-exact-posterior benchmark (issue 20; BENCHMARKS.md §13, ``benchmarks/inpaint_oracle.py``):
its exact posterior of a Gaussian mixture given the observed coordinates is the Gaussian conditioning formula
and the σ_y → 0 limit of ``GaussianMixture.posterior``; its identity-VAE oracle runs through NestedPipeline's
edit path; the script runs at a tiny size and blending keeps the known coordinates exactly."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from nested_diffusion.testing import GaussianMixture

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "inpaint_oracle.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("inpaint_oracle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_gaussian(d, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(d, generator=g, dtype=torch.float64), A @ A.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_one_gaussian_is_conditioned_by_the_precision_formula(bench):
    """x_u | x_o = y ~ N(μ_u - Λ_uu⁻¹ Λ_uo (y - μ_o), Λ_uu⁻¹) with Λ = Σ⁻¹ (Bishop 2006, eqs. 2.68–2.69): another
    route to the same Gaussian than the benchmark's Σ_uo Σ_oo⁻¹ form."""
    mu, cov = random_gaussian(6, 0)
    observed = torch.tensor([True, False, True, True, False, False])
    y = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    post = bench.InpaintingPosterior(GaussianMixture(mu[None], cov[None]), observed, y)
    o, u = observed, ~observed
    P = torch.linalg.inv(cov)
    cond_cov = torch.linalg.inv(P[u][:, u])
    cond_mean = mu[u] - cond_cov @ P[u][:, o] @ (y - mu[o])
    torch.testing.assert_close(post.repainted.means[0], cond_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(post.repainted.covariances[0], cond_cov, rtol=0, atol=1e-12)
    full_mean, full_cov = post.mean(), post.covariance()  # over all coordinates: y and no variance where observed
    assert torch.equal(full_mean[o], y) and torch.equal(full_cov[o], torch.zeros(3, 6, dtype=torch.float64))
    torch.testing.assert_close(full_cov[u][:, u], cond_cov, rtol=0, atol=1e-12)
    s = post.sample(20_000, torch.Generator().manual_seed(1))
    assert torch.equal(s[:, o], y.expand(len(s), -1))
    torch.testing.assert_close(s.mean(0), full_mean, rtol=0, atol=0.03)


def test_the_mixture_posterior_is_the_noiseless_limit_of_the_measurement_posterior(bench, gmm):
    """Weights, means and covariances on the repainted coordinates: GaussianMixture.posterior of Inpainting with
    σ_y = 1e-6 (PAPER.md's S = HΣHᵀ + σ_y²I route) agrees within O(σ_y²)-sized terms."""
    case = bench.Case(gmm, 1, "bottom-three-quarters")  # the benchmark's case with an uncertain class
    op, y, exact = case.operator, case.y[0], case.posterior
    noisy = gmm.posterior(op, y, 1e-6)
    u = ~op.mask.reshape(-1)
    w = exact.repainted.weights
    assert float(w.max()) < 0.5 and int((w > 0.05).sum()) >= 4  # weights matter here
    torch.testing.assert_close(w, noisy.weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(exact.repainted.means, noisy.means[:, u], rtol=0, atol=1e-6)
    torch.testing.assert_close(exact.repainted.covariances, noisy.covariances[:, u][:, :, u], rtol=0, atol=1e-6)
    torch.testing.assert_close(exact.mean(), noisy.mean(), rtol=0, atol=1e-6)
    samples = exact.sample(4000, torch.Generator().manual_seed(4))
    assert exact.frechet_distance(samples) < 0.2 and exact.class_distance(samples) < 0.03
    assert exact.frechet_distance(gmm.sample(4000, torch.Generator().manual_seed(4))[0]) > 5  # the prior is far
    top = exact.repainted.sample(4000, torch.Generator().manual_seed(5), classes=torch.full((4000,), int(w.argmax())))
    one_class = exact.class_distance(exact._embed(top[0]))  # every sample the likeliest digit: TV = 1 - w_max
    assert abs(one_class - (1 - float(w.max()))) < 0.03


def test_bad_observations_are_refused(bench, gmm):
    with pytest.raises(ValueError, match="some but not all"):
        bench.InpaintingPosterior(gmm, torch.ones(64, dtype=torch.bool), torch.zeros(64))
    with pytest.raises(ValueError, match="y has 3 entries for 32"):
        bench.InpaintingPosterior(gmm, bench.repainted_mask("top-half"), torch.zeros(3))


def test_the_script_runs_at_a_tiny_size(bench, tmp_path, capsys):
    cache = tmp_path / "cache.json"
    bench.main(["--num-samples", "16", "--schedules", "scaled-linear", "flow-shift3", "--cases", "random-half:0",
                "--budgets", "3", "6", "--long", "0", "--cache", str(cache)])
    printed = capsys.readouterr().out
    assert "### Finals at 6 NFEs, 16 samples" in printed and "#### flow-shift3, random-half repainted" in printed
    runs = {key.split("|", 1)[1]: curve for key, curve in json.loads(cache.read_text()).items()}
    assert len(runs) == 2 * 5 * 2 + 1  # schedules × methods × budgets, and the exact-sample floor
    for key, curve in runs.items():
        nfes = sorted(map(int, curve))
        if key.startswith("posterior"):
            assert curve["0"][1] == 0.0  # exact samples keep y
            continue
        budget = int(key.rsplit("=", 1)[1])
        assert nfes[-1] == budget, key  # exact NFE labels: the final frame at the budget
        if key.startswith(("vanilla", "nested-blend")):  # blending: the final keeps y exactly
            assert curve[str(budget)][1] == 0.0, key
        if key.startswith("nested-blend"):  # ... and so does every nested frame
            assert all(v[1] == 0.0 for v in curve.values()), key
        assert all(v[0] > 0 for v in curve.values()), key
    bench.main(["--num-samples", "16", "--schedules", "scaled-linear", "--cases", "bottom-three-quarters:1",
                "--budgets", "3", "--shares", "--cache", str(cache)])
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "“0”" not in line]
    assert len(rows) == 2 + 5  # the posterior's weights, exact samples, five methods
    for line in rows:  # shares of the ten digit classes sum to one
        assert abs(sum(map(float, line.split("|")[2:12])) - 1) < 0.06, line
