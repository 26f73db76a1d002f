"""Restoration quality on the exact oracle: FD to the exact posterior of one measurement.

Thresholds come from ``benchmarks/restore_oracle.py`` (BENCHMARKS.md §6, 2,000 samples) with margins
for the 500 samples used here; the values are printed by each test.
"""

import pytest
import torch

from nested_diffusion import ddrm_sample, nested_restore
from nested_diffusion.restoration import Inpainting, SuperResolution, residual_ratio
from nested_diffusion.schedules import make_alphas_cumprod

N = 500
SHAPE = (1, 8, 8)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def curve(posterior, op, y, sigma_y, session):
    return {f.nfe: (posterior.frechet_distance(f.image), residual_ratio(op, f.image, y, sigma_y)) for f in session}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("case", ["inpaint-half", "sr2"])
def test_nested_restore_frames_beat_ddrm_previews(gmm, schedule, case):
    ac = make_alphas_cumprod(schedule)
    mask = torch.zeros(64, dtype=torch.bool)
    mask[torch.randperm(64, generator=gen(1))[:32]] = True
    op = Inpainting(mask.reshape(SHAPE)) if case == "inpaint-half" else SuperResolution(2)
    x0 = gmm.sample(1, gen(2))[0].reshape(1, *SHAPE)
    y1 = op.measure(x0, 0.05, gen(3))
    posterior = gmm.posterior(op, y1[0], 0.05)
    y = y1.expand(N, *y1.shape[1:])
    common = dict(operator=op, measurement=y, sigma_y=0.05)
    noise = torch.randn(N, *SHAPE, generator=gen(4), dtype=torch.float64)
    nested = curve(posterior, op, y, 0.05, nested_restore(gmm.model(ac), ac, noise, **common, generator=gen(5)))
    ddrm = curve(posterior, op, y, 0.05, ddrm_sample(gmm.model(ac), ac, noise, **common, generator=gen(5)))
    print(schedule, case, {n: tuple(round(v, 3) for v in nested[n]) for n in nested},
          {n: round(ddrm[n][0], 3) for n in (10, 20, 100)})
    assert list(nested) == [10, 20, 30, 50, 75, 100]
    for n in (10, 20):  # the anytime frames: far closer to the posterior than DDRM's previews
        assert nested[n][0] * 3 <= ddrm[n][0], n
    assert nested[100][0] <= 1.2 * ddrm[100][0] + 0.05  # and a final as good as DDRM's own
    assert nested[100][0] < nested[10][0] / 3  # improving with compute
    for n, (_, ratio) in nested.items():  # consistent with y, never fitting its noise
        assert 0.2 <= ratio <= 5, (n, ratio)
