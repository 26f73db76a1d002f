"""Models shipped inside the package: the embedded digit diffusion model and digit classifier."""

from __future__ import annotations

from pathlib import Path

__all__ = ["embedded_model_path", "classifier_path", "load_classifier", "check_digits"]

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


def check_digits(images, labels) -> dict:
    """Classify 1×28×28 digit images in [-1, 1] with the shipped classifier against the requested
    ``labels``: ``{"predicted": [...], "correct": n, "total": N}``."""
    import torch

    x = images.float().cpu().clamp(-1, 1)
    if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"the digit check needs 1×28×28 digit images, got {tuple(x.shape[1:])}")
    with torch.inference_mode():
        predicted = load_classifier()(x).argmax(1).tolist()
    return {"predicted": predicted, "correct": sum(p == c for p, c in zip(predicted, labels)), "total": len(labels)}
