"""Today's VP behaviour, pinned: every frame of the planned default, the paper's layout, vanilla
samplers and the restoration sessions — on the exact oracle (three schedules, three prediction types)
and on the embedded digit model (float64, so the reference holds for any thread count) — equals the
frames recorded by ``tests/make_vp_reference.py`` before the schedule redesign (issue 16)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import make_vp_reference as cases

REFERENCE = load_file(str(Path(__file__).parent / "data" / "vp_reference.safetensors"))
ORACLE, DIGITS = cases.oracle_cases(), cases.digit_cases()


def check(name, frames):
    frames = cases.kept(frames)
    nfes = torch.tensor([f.nfe for f in frames])
    images = torch.stack([getattr(f, "latents", None) if hasattr(f, "latents") else f.image for f in frames])
    assert torch.equal(nfes, REFERENCE[name + "#nfe"]), name
    assert images.dtype == torch.float64
    torch.testing.assert_close(images, REFERENCE[name], rtol=0, atol=1e-6, msg=name)


def test_every_case_is_recorded():
    assert {k for k in REFERENCE if not k.endswith("#nfe")} == set(ORACLE) | set(DIGITS)


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_oracle_frames_are_unchanged(gmm, name):
    check(name, list(ORACLE[name](gmm)))


@pytest.fixture(scope="module")
def digits64():
    from nested_diffusion import NestedPipeline

    return NestedPipeline.from_pretrained(dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(DIGITS))
def test_digit_frames_are_unchanged(digits64, name):
    check(name, list(DIGITS[name](digits64)))
