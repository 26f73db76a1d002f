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
        self.timesteps.append(t[0].item())  # an int timestep, or a float model time σ·T
        return self.model(x, t, **kwargs)


@pytest.fixture
def counting():
    return CountingModel


class FakeClock:
    """A deterministic wall clock: each model call takes exactly one 'second'."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr("nested_diffusion.session.time.perf_counter", lambda: self.now)

    def slow(self, model):
        def wrapped(x, t, **kw):
            self.now += 1.0
            return model(x, t, **kw)
        return wrapped


@pytest.fixture
def fake_clock(monkeypatch):
    return FakeClock(monkeypatch)


# -- the studio's in-process app (test_studio_api, test_studio_edit; modules may define their own) ----------
@pytest.fixture(scope="module")
def pipe():
    """The embedded digit pipeline, shared by the studio tests' modules."""
    from studio_support import digits

    return digits()


@pytest.fixture
def app(pipe):
    """An in-process studio app, unbatched and with no worker thread: the test drives the worker step by step,
    and frames are bit-equal to the library's."""
    from nested_diffusion.studio.app import create_app

    return create_app(pipe, start_worker=False, batching=False)


@pytest.fixture
def api(app):
    """A TestClient on :func:`app`."""
    from studio_support import client

    with client(app) as c:
        yield c
