"""Request bodies of the ``/v1`` API: types, ranges and caps (:class:`~.limits.Limits`), checked
before any work. Unknown fields are refused (a mistyped ``guidence_scale`` must not be ignored).
Model-specific checks (class range, text or class model) are the library's, at session creation."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..defaults import DEFAULT_BUDGET
from .limits import Limits

__all__ = ["CreateSession", "ConditionPatch", "ForkRequest", "SAMPLERS", "apply_limits", "format_errors"]

SAMPLERS = ("ddim", "ddpm", "dpmpp-2m", "dpmpp-2m-sde")
_SEED_MAX = 2**63 - 1

ClassLabels = int | list[int] | None
Prompt = str | list[str] | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as given: no "3" or true for 3


class _Condition(_Body):
    class_labels: ClassLabels = None
    prompt: Prompt = None
    negative_prompt: Prompt = None
    guidance_scale: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)

    @field_validator("class_labels")
    @classmethod
    def _labels(cls, v: ClassLabels) -> ClassLabels:
        if isinstance(v, list) and not v:
            raise ValueError("class_labels must be one label, a list of labels or null")
        return v


class CreateSession(_Condition):
    """``POST /v1/sessions``: null takes the project default."""

    num_images: int = Field(1, ge=1)
    budget: int | None = Field(DEFAULT_BUDGET, ge=1)
    outer_steps: int | None = Field(None, ge=1)
    inner_steps: int | list[int] | None = None
    inner_sampler: Literal[SAMPLERS] | None = None  # type: ignore[valid-type]
    seed: int = Field(0, ge=0, le=_SEED_MAX)
    deadline: float | None = Field(None, gt=0, allow_inf_nan=False)
    height: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=1)
    #: also run the vanilla sampler (DDIM, η = 1) with the same NFEs and show its x̂0 previews
    compare_vanilla: bool = False

    def library_kwargs(self) -> dict[str, Any]:
        """Arguments of :meth:`NestedPipeline.anytime` (the generator is added by the caller)."""
        return dict(class_labels=self.class_labels, prompt=self.prompt, negative_prompt=self.negative_prompt,
                    guidance_scale=self.guidance_scale, num_images=self.num_images, budget=self.budget,
                    outer_steps=self.outer_steps, inner_steps=self.inner_steps, inner_sampler=self.inner_sampler,
                    height=self.height, width=self.width)


class ConditionPatch(_Condition):
    """``PATCH .../condition``: only the fields given change (null resets one to the model default)."""

    @model_validator(mode="after")
    def _not_empty(self) -> "ConditionPatch":
        if not self.model_fields_set:
            raise ValueError("give at least one of class_labels, prompt, negative_prompt, guidance_scale")
        return self

    def changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in sorted(self.model_fields_set)}


class ForkRequest(_Body):
    """``POST .../fork``: ``count`` children with their own noise, or with ``image`` one child
    holding ``count`` variations of that image."""

    count: int = Field(2, ge=1)
    seeds: list[int] | None = None
    image: int | None = Field(None, ge=0)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(not 0 <= s <= _SEED_MAX for s in v):
            raise ValueError(f"seeds must lie in [0, {_SEED_MAX}]")
        return v

    @model_validator(mode="after")
    def _seed_count(self) -> "ForkRequest":
        wanted = 1 if self.image is not None else self.count
        if self.seeds is not None and len(self.seeds) != wanted:
            what = "one seed (one new branch)" if self.image is not None else f"{self.count} seeds (one per branch)"
            raise ValueError(f"seeds must hold {what}, got {len(self.seeds)}")
        return self


def apply_limits(body: BaseModel, limits: Limits) -> None:
    """The server's caps on a validated body; raises ``ValueError`` naming the field and the cap."""
    def cap(name: str, value: Any, maximum: float) -> None:
        if value is not None and value > maximum:
            raise ValueError(f"{name} must be at most {maximum:g} on this server, got {value}")

    for name in ("prompt", "negative_prompt"):
        value = getattr(body, name, None)
        texts = [value] if isinstance(value, str) else (value or [])
        if len(texts) > limits.max_images:
            raise ValueError(f"{name} lists {len(texts)} prompts; at most {limits.max_images} on this server")
        for text in texts:
            if len(text) > limits.max_prompt_chars:
                raise ValueError(f"{name} must be at most {limits.max_prompt_chars} characters, got {len(text)}")
    labels = getattr(body, "class_labels", None)
    if isinstance(labels, list):
        cap("the number of class_labels", len(labels), limits.max_images)
    if isinstance(body, CreateSession):
        cap("num_images", body.num_images, limits.max_images)
        cap("budget", body.budget, limits.max_nfe)
        cap("outer_steps", body.outer_steps, limits.max_outer_steps)
        cap("deadline", body.deadline, limits.max_deadline)
        inner = body.inner_steps if isinstance(body.inner_steps, list) else [body.inner_steps]
        cap("the number of inner_steps", len(inner), limits.max_outer_steps)
        for m in inner:
            if m is not None and not 1 <= m <= limits.max_nfe:
                raise ValueError(f"inner_steps must lie in [1, {limits.max_nfe}], got {m}")
        for name in ("height", "width"):
            cap(name, getattr(body, name), math.isqrt(limits.max_pixels) * 4)
        if body.height is not None and body.width is not None:
            cap("height × width", body.height * body.width, limits.max_pixels)
    if isinstance(body, ForkRequest):
        cap("count", body.count, limits.max_images if body.image is not None else limits.max_branches)


_UNION_TAG = re.compile(r"^(int|str|float|bool|list\[.*\]|function-.*|literal\[.*\])$")


def format_errors(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors as one line: ``field: message; …``."""
    parts = []
    for e in errors:  # a location names fields and list indices, not the union member that was tried
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body" and not _UNION_TAG.match(str(p)))
        message = e.get("msg", "invalid").removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts) or "invalid request"
