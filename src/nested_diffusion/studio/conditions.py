"""The one check of a condition against the model, and what the model says about itself.

A condition (``class_labels``, ``prompt``, ``negative_prompt``, ``guidance_scale``) is checked by the
adapter's own rules (:func:`nested_diffusion.pipelines.adapter.check_condition`, no prompt encoding)
for a number of images: the studio never restates them. Which fields a model takes comes from its
declared :class:`~nested_diffusion.pipelines.adapter.Conditioning`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_condition", "model_info"]


def check_condition(adapter: Any, num_images: int, condition: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the field if ``condition`` does not fit ``num_images`` images of
    this model (fields the model does not declare must be ``None``)."""
    from ..pipelines.adapter import check_condition as adapter_check

    taken = set(adapter.conditioning.fields)
    extra = sorted(k for k, v in condition.items() if v is not None and k not in taken)
    if extra:
        raise ValueError(f"this {adapter.family} model does not take {', '.join(extra)} "
                         f"(its condition: {', '.join(sorted(taken)) or 'none'})")
    try:
        adapter_check(adapter, num_images, **{k: v for k, v in condition.items() if k in taken})
    except TypeError as e:
        raise ValueError(str(e)) from None


def model_info(adapter: Any) -> dict[str, Any]:
    """The model's controls for clients: family, declared conditioning, classes, sizes, samplers."""
    from ..defaults import DEFAULT_BUDGET, PLAN_INNER_SAMPLER
    from .schemas import sampler_names

    (height, width), multiple = adapter.size_rule()
    conditioning = adapter.conditioning
    return {"family": adapter.family, "conditioning": conditioning.kind, "condition": conditioning.describe(),
            "num_classes": getattr(adapter, "num_classes", None), "class_names": getattr(adapter, "class_names", None),
            "default_guidance": adapter.default_guidance, "default_size": [height, width], "size_multiple": multiple,
            "default_budget": DEFAULT_BUDGET, "inner_sampler": PLAN_INNER_SAMPLER, "samplers": sampler_names()}
