"""Test oracles shipped with the package (no training, no downloads)."""

from .gmm import GaussianMixture

__all__ = ["GaussianMixture"]
