import pytest
import torch

from nested_diffusion.schedules import make_alphas_cumprod
from nested_diffusion.testing import GaussianMixture


@pytest.fixture(scope="session")
def gmm() -> GaussianMixture:
    return GaussianMixture.from_digits()


@pytest.fixture(scope="session")
def linear() -> torch.Tensor:
    return make_alphas_cumprod("linear")


class CountingModel:
    """Wraps a model and counts its calls (the ground truth for NFE counts)."""

    def __init__(self, model):
        self.model, self.calls, self.timesteps = model, 0, []

    def __call__(self, x, t, **kwargs):
        self.calls += 1
        self.timesteps.append(int(t[0]))
        return self.model(x, t, **kwargs)


@pytest.fixture
def counting():
    return CountingModel
