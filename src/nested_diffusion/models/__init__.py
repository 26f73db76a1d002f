"""Models shipped inside the package: the embedded digit diffusion model and digit classifier."""

from __future__ import annotations

from pathlib import Path

__all__ = ["embedded_model_path", "classifier_path", "load_classifier"]

_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def embedded_model_path() -> Path:
    """Folder of the embedded class-conditional MNIST model (diffusers DDPMPipeline format)."""
    return _ASSETS / "digits"


def classifier_path() -> Path:
    """Folder of the shipped digit classifier (safetensors)."""
    return _ASSETS / "digit-classifier"


def load_classifier():
    """The shipped :class:`~nested_diffusion.models.classifier.DigitClassifier`, in eval mode."""
    from .classifier import DigitClassifier

    return DigitClassifier.from_pretrained(classifier_path())
