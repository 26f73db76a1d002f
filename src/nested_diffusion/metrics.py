"""Fréchet distance between Gaussians (Heusel et al. 2017, the "F" of FID)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["gaussian_stats", "frechet_distance"]


def gaussian_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``[N, d]`` features, in float64."""
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
    f = f.reshape(len(f), -1)
    if len(f) < 2:
        raise ValueError(f"need at least 2 samples for a covariance, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """‖μ1 - μ2‖² + Tr(C1 + C2 - 2 (C1 C2)^½), with (C1 C2)^½ through the symmetric
    C1^½ C2 C1^½ (same trace), so it stays real and stable for singular covariances."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: means {mu1.shape}/{mu2.shape}, covariances {cov1.shape}/{cov2.shape}")
    s1 = _sqrtm_psd(cov1)
    w = np.linalg.eigvalsh(s1 @ cov2 @ s1)
    trace_sqrt = np.sqrt(np.clip(w, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt)
