"""A small CNN digit classifier, shipped with the package for diagnostics and evaluation.

It classifies 28×28 grey digits in [-1, 1] (the embedded diffusion model's output range) and
exposes its 128-d penultimate features for a Fréchet distance in "digit space" (the MNIST
analogue of FID's Inception features).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

__all__ = ["DigitClassifier"]


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
    )


class DigitClassifier(nn.Module):
    """conv(32)×2 → pool → conv(64)×2 → pool → conv(128) → global mean → 128-d → 10 logits."""

    config_name = "config.json"
    weights_name = "model.safetensors"

    def __init__(self, num_classes: int = 10, feature_dim: int = 128) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            _block(1, 32), nn.MaxPool2d(2),
            _block(32, 64), nn.MaxPool2d(2),
            nn.Conv2d(64, feature_dim, 3, padding=1), nn.GroupNorm(8, feature_dim), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[N, feature_dim]`` of images ``[N, 1, 28, 28]`` in [-1, 1]."""
        if images.ndim != 4 or images.shape[1:] != (1, 28, 28):
            raise ValueError(f"images must have shape [N, 1, 28, 28], got {tuple(images.shape)}")
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))

    def save_pretrained(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / self.config_name).write_text(json.dumps(
            {"num_classes": self.num_classes, "feature_dim": self.feature_dim}, indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / self.weights_name))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "DigitClassifier":
        """Load from a folder written by :meth:`save_pretrained` (safetensors, no pickle)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            config = json.loads((folder / cls.config_name).read_text())
            state = load_file(str(folder / cls.weights_name))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load a DigitClassifier from {str(folder)!r}: {e}") from e
        model = cls(**config)
        model.load_state_dict(state)
        return model.eval()
