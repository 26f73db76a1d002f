"""GaussianMixture.posterior: the exact posterior of a linear measurement, checked against brute force."""

import math

import pytest
import torch

from nested_diffusion.restoration import Dense, Inpainting, SuperResolution, residual_ratio
from nested_diffusion.testing import GaussianMixture


def gen(seed):
    return torch.Generator().manual_seed(seed)


def normal_pdf(x, mean, var):
    return torch.exp(-0.5 * (x - mean) ** 2 / var) / math.sqrt(2 * math.pi * var)


def test_one_dimensional_closed_form_by_quadrature():
    prior = GaussianMixture(torch.tensor([[-1.0], [2.0]]), torch.tensor([[[0.5]], [[0.2]]]), torch.tensor([0.3, 0.7]))
    h, sigma_y, y = 1.5, 0.4, 1.0
    post = prior.posterior(Dense([[h]]), torch.tensor([y]), sigma_y)
    x = torch.linspace(-12, 12, 400_001, dtype=torch.float64)
    joint_k = torch.stack([w * normal_pdf(x, m, v) for w, m, v in
                           zip(prior.weights, prior.means[:, 0], prior.covariances[:, 0, 0])]) * normal_pdf(y, h * x, sigma_y**2)
    density = joint_k.sum(0)
    Z = torch.trapezoid(density, x)
    mean = torch.trapezoid(x * density, x) / Z
    var = torch.trapezoid((x - mean) ** 2 * density, x) / Z
    skew = torch.trapezoid((x - mean) ** 3 * density, x) / Z
    torch.testing.assert_close(post.mean()[0], mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(post.covariance()[0, 0], var, rtol=0, atol=1e-9)
    torch.testing.assert_close(post.weights, torch.trapezoid(joint_k, x) / Z, rtol=0, atol=1e-9)
    s = post.sample(400_000, gen(0))[0][:, 0]
    assert abs(((s - mean) ** 3).mean() - skew) < 0.01  # a mixture, not a Gaussian: the third moment too


def test_two_dimensional_against_importance_weighted_prior_samples():
    means = torch.tensor([[0.0, 0.0], [2.0, -1.0], [-1.5, 2.0]])
    A = torch.tensor([[[1.0, 0.3], [0.0, 0.5]], [[0.4, 0.0], [0.2, 0.8]], [[0.7, -0.2], [0.1, 0.3]]])
    prior = GaussianMixture(means, A @ A.transpose(1, 2), torch.tensor([0.5, 0.3, 0.2]))
    H, sigma_y, y = torch.tensor([[1.0, -0.5]]), 0.3, torch.tensor([1.2])
    post = prior.posterior(Dense(H), y, sigma_y)
    x = prior.sample(2_000_000, gen(1))[0]
    w = normal_pdf(y.double(), x @ H.double().T, sigma_y**2)[:, 0]
    w = w / w.sum()
    mean = (w[:, None] * x).sum(0)
    cov = (w[:, None, None] * (x - mean)[:, :, None] * (x - mean)[:, None, :]).sum(0)
    torch.testing.assert_close(post.mean(), mean, rtol=0, atol=0.01)
    torch.testing.assert_close(post.covariance(), cov, rtol=0, atol=0.01)


@pytest.mark.parametrize("make,sigma_y", [
    (lambda: Dense(torch.randn(20, 64, generator=gen(3), dtype=torch.float64) / 8), 0.1),
    (lambda: Inpainting(torch.rand(1, 8, 8, generator=gen(4)) < 0.5), 0.05),
    (lambda: SuperResolution(2), 0.05),
])
def test_exact_posterior_samples_have_residual_ratio_one(gmm, make, sigma_y):
    """E‖Hx̂ - y‖² = m σ_y² over (x0, y) from the joint when x̂ ~ p(x0 | y) (PAPER.md)."""
    op = make()
    x0 = gmm.sample(200, gen(5))[0].reshape(200, 1, 8, 8)
    y = op.measure(x0, sigma_y, gen(6))
    if isinstance(op, Dense):
        y = y.reshape(200, -1)
    samples = torch.cat([gmm.posterior(op, y[i], sigma_y).sample(25, gen(100 + i))[0] for i in range(200)])
    ratio = residual_ratio(op, samples.reshape(-1, *x0.shape[1:]) if not isinstance(op, Dense) else samples,
                           y.repeat_interleave(25, 0), sigma_y)
    assert abs(ratio - 1.0) < 0.05, ratio
    # the ground truth itself scores the same
    assert abs(residual_ratio(op, x0 if not isinstance(op, Dense) else x0.reshape(200, -1), y, sigma_y) - 1) < 0.1


def test_posterior_concentrates_on_the_measurement_and_scores_with_frechet_distance(gmm):
    mask = torch.rand(1, 8, 8, generator=gen(4)) < 0.5
    op = Inpainting(mask)
    x0 = gmm.sample(1, gen(7))[0].reshape(1, 1, 8, 8)
    y = op(x0)[0]
    post = gmm.posterior(op, y, 1e-3)
    torch.testing.assert_close(post.mean()[mask.reshape(-1)], y, rtol=0, atol=1e-4)
    exact = post.sample(2000, gen(8))[0]
    assert post.frechet_distance(exact) < 0.02
    assert post.frechet_distance(gmm.sample(2000, gen(9))[0]) > 10 * post.frechet_distance(exact)


def test_posterior_bad_input(gmm):
    op = Dense(torch.randn(3, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma_y > 0"):
        gmm.posterior(op, torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match="sigma_y"):
        gmm.posterior(op, torch.zeros(3), -1.0)
    with pytest.raises(ValueError, match="d = 64"):
        gmm.posterior(Dense(torch.randn(3, 10)), torch.zeros(3), 0.1)
    with pytest.raises(ValueError, match="divisible|d = 64"):
        gmm.posterior(SuperResolution(2), torch.zeros(1, 3, 3), 0.1)


def test_components_is_the_most_likely_component():
    """components(x) = argmax_k log w_k + log N(x; μ_k, Σ_k): equal to brute force (torch.distributions densities) in 2-d and, on the
    digit mixture, each exact sample's own component (the classes are well separated)."""
    means = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    covs = torch.stack([torch.eye(2), torch.tensor([[2.0, 0.5], [0.5, 1.0]]), 0.3 * torch.eye(2)]).double()
    g = GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    x = torch.randn(500, 2, generator=gen(0), dtype=torch.float64) * 2
    density = torch.stack([g.weights[k] * torch.exp(torch.distributions.MultivariateNormal(means[k], covs[k]).log_prob(x))
                           for k in range(3)])
    assert torch.equal(g.components(x), density.argmax(0))
    digits = GaussianMixture.from_digits()
    samples, classes = digits.sample(2000, gen(1))
    assert torch.equal(digits.components(samples.reshape(2000, 1, 8, 8)), classes)
