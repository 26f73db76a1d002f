"""Models shipped inside the package: the embedded digit diffusion models and digit classifier.

Two embedded class-conditional MNIST models, named ``embedded:NAME`` wherever a command or
:meth:`~nested_diffusion.NestedPipeline.from_pretrained` takes a model (:func:`resolve_model` is the one
rule): ``embedded:digits`` (DDPM, ε prediction on the linear VP schedule; the default, also reached with no
model) and ``embedded:digits-flow`` (rectified flow, velocity prediction, ``FlowMatchEulerDiscreteScheduler``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["EMBEDDED_MODELS", "DEFAULT_EMBEDDED", "embedded_names", "embedded_model_path", "resolve_model", "model_label",
           "classifier_path", "load_classifier", "check_digits"]

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
_PREFIX = "embedded:"

#: name → what it is; each is the diffusers pipeline folder ``assets/<name>`` (trained by ``scripts/train_digits.py``)
EMBEDDED_MODELS: dict[str, str] = {
    "digits": "class-conditional MNIST, DDPM (ε prediction, linear VP schedule); the default",
    "digits-flow": "class-conditional MNIST, rectified flow (velocity prediction, FlowMatchEulerDiscreteScheduler)",
}
DEFAULT_EMBEDDED = "digits"


def embedded_names() -> list[str]:
    """The accepted ``embedded:NAME`` model arguments."""
    return [_PREFIX + name for name in EMBEDDED_MODELS]


def embedded_model_path(name: str = DEFAULT_EMBEDDED) -> Path:
    """Folder of an embedded model (diffusers pipeline format, safetensors): ``"digits"`` (the default) or
    ``"digits-flow"``."""
    if name not in EMBEDDED_MODELS:
        accepted = ", ".join(embedded_names())
        raise ValueError(f"unknown embedded model {_PREFIX + str(name)!r}: the embedded models are {accepted}")
    return _ASSETS / name


def resolve_model(model: str | os.PathLike | None) -> str | os.PathLike:
    """What to load for a ``model`` argument: ``None`` → the default embedded model's folder,
    ``"embedded:NAME"`` → that embedded model's folder (unknown names are a ``ValueError`` listing the
    accepted ones); anything else (a folder or hub id) unchanged."""
    if model is None:
        return embedded_model_path()
    if isinstance(model, str) and model.startswith(_PREFIX):
        return embedded_model_path(model[len(_PREFIX):])
    return model


def model_label(model: str | os.PathLike | None) -> str:
    """How records name a ``model`` argument: ``None`` is ``"embedded:digits"``, the rest as given."""
    return _PREFIX + DEFAULT_EMBEDDED if model is None else os.fspath(model)


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
