"""The ``/v1`` request contract: one set of request models per server, built from its model's
declared conditioning (:class:`~nested_diffusion.pipelines.adapter.Conditioning`), its image-size rule
and the server's :class:`~.limits.Limits`, so that the published OpenAPI document is exactly what the
server accepts.

Every rule lives here once, twice expressed from the same numbers: as JSON Schema (ranges, multiples,
lengths, enums, and ``if``/``then`` clauses for the few rules that tie two fields of one body) and as
the model's own validator. What a body can break only against the server's *state* (a condition that
does not fit a branch's images, a fork past the branch cap) is a 409, not a 422 (:mod:`.errors`).

Rules tying fields together:

* ``inner_steps`` fixes the layout's NFEs: it excludes ``budget`` (which plans them; default 100), and
  a list of counts (one per outer step) excludes ``outer_steps``;
* ``class_labels`` as a list holds one label or one per image (``num_images``); ``prompt`` as a list
  holds a number of prompts dividing ``num_images``; ``negative_prompt`` as a list holds one per prompt;
* a fork's ``seeds`` hold one seed per new branch: ``count`` of them, or one with ``image``;
* an edit: ``mask_image`` and ``strength`` need ``image``; on a pixel-space model a mask (nested DDRM)
  takes strength 1 (or null) and no ``inner_sampler``; a dedicated inpainting network needs both
  ``image`` and ``mask_image``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from typing import Annotated

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, create_model,
                      model_validator)

from ..defaults import DEFAULT_BUDGET
from ..pipelines.editing import DEFAULT_STRENGTH
from .limits import Limits
from .uploads import ID_PATTERN

__all__ = ["Contract", "SEED_MAX", "format_errors", "sampler_names"]

SEED_MAX = 2**63 - 1
MAX_GUIDANCE = 100.0


def sampler_names() -> list[str]:
    """The inner samplers a session may use: the library's registry, never a copy of it."""
    from ..samplers import SAMPLERS

    return list(SAMPLERS)


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` includes numbers like ``2.0``: take them as ints (never a bool or "2")."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


#: an integer as JSON Schema means it (``2`` or ``2.0``), strictly otherwise
Int = Annotated[int, BeforeValidator(_integral)]


#: an uploaded image's id (``POST /v1/images``)
ImageId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
#: an edit's strength, in (0, 1]
Strength = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]


def _int(lo: int, hi: int) -> Any:
    """An :data:`Int` in ``[lo, hi]`` (bounds inside the type, so that they stay JSON Schema in a union)."""
    return Annotated[int, Field(ge=lo, le=hi), BeforeValidator(_integral)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as given: no "3" or true for 3


def _arrays(lengths: list[int]) -> list[dict[str, Any]]:
    return [{"type": "array", "minItems": n, "maxItems": n} for n in lengths]


def _length_rule(field: str, lengths: list[int]) -> dict[str, Any]:
    """``field`` is not a list, or a list of one of ``lengths`` entries (JSON Schema)."""
    return {"properties": {field: {"anyOf": [{"not": {"type": "array"}}, *_arrays(sorted(set(lengths)))]}}}


def _when(field: str, value: Any, then: dict[str, Any], default: Any = None) -> dict[str, Any]:
    """``if field == value then …`` (an absent field counts as its ``default``)."""
    condition: dict[str, Any] = {"properties": {field: {"const": value}}}
    if value != default:
        condition["required"] = [field]
    return {"if": condition, "then": then}


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def _model(name: str, doc: str, schema_extra: dict[str, Any], rules: Any, base: type = None, **fields: Any
           ) -> type[BaseModel]:
    """A request model: strict, closed, documented ``schema_extra`` (the JSON Schema form of ``rules``),
    validated by ``rules(body)`` after the per-field checks."""
    config = ConfigDict(extra="forbid", strict=True, json_schema_extra=schema_extra)
    parent = type(f"_{name}Base", (base or _Body,), {"model_config": config, "__doc__": doc})
    validator = model_validator(mode="after")(lambda body: rules(body) or body)
    return create_model(name, __base__=parent, __doc__=doc, __validators__={"rules": validator}, **fields)


class _Patch(_Body):
    def changes(self) -> dict[str, Any]:
        """The fields given, in name order."""
        return {k: getattr(self, k) for k in sorted(self.model_fields_set)}


@dataclass(frozen=True)
class Contract:
    """The request models of one server: ``CreateSession``, ``ConditionPatch``, ``EditPatch`` and
    ``ForkRequest``."""

    CreateSession: type[BaseModel]
    ConditionPatch: type[BaseModel]
    EditPatch: type[BaseModel]
    ForkRequest: type[BaseModel]
    fields: tuple[str, ...]  # the condition fields this model takes

    @classmethod
    def build(cls, conditioning: Any, num_classes: int | None, size_rule: tuple[tuple[int, int], int],
              limits: Limits, editing: dict[str, Any] | None = None) -> "Contract":
        """The contract for a model declaring ``conditioning`` (``num_classes`` labels) whose images
        are ``size_rule = ((default h, w), multiple)`` pixels and whose edits are ``editing``
        (:func:`~.editing.editing_info`; ``None``: a latent model with an ordinary network), on a
        server with ``limits``."""
        fields = tuple(conditioning.fields)
        editing = editing or {"strength_with_mask": True, "mask_required": False}
        condition = _condition_fields(fields, num_classes, limits)
        create = _create_model(condition, fields, num_classes, size_rule, limits, editing)
        patch = _patch_model(condition, fields, num_classes, limits)
        fork = _fork_model(limits)
        return cls(create, patch, _edit_patch_model(), fork, fields)

    def parse(self, model: type[BaseModel], body: bytes, content_type: str | None) -> BaseModel:
        """A request body as ``model``: JSON only (else :class:`~.errors.Unsupported`), validated (else
        :class:`~.errors.Invalid` naming each field)."""
        from .errors import Invalid, Unsupported

        media = (content_type or "").split(";")[0].strip().lower()
        if media != "application/json":
            raise Unsupported(f"the request body must be application/json, got {content_type or 'no Content-Type'}")
        try:
            data = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise Invalid(f"the request body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise Invalid(f"the request body must be a JSON object, got {type(data).__name__}")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            message = format_errors(e.errors())
            if any(err.get("type") == "extra_forbidden" for err in e.errors()):
                message += f" (this model takes {', '.join(model.model_fields)})"
            raise Invalid(message) from None

    def components(self) -> dict[str, Any]:
        """The models' JSON Schemas, for ``#/components/schemas`` of the OpenAPI document."""
        out: dict[str, Any] = {}
        for model in (self.CreateSession, self.ConditionPatch, self.EditPatch, self.ForkRequest):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            out.update(schema.pop("$defs", {}))
            out[model.__name__] = schema
        return out


# -- the fields ---------------------------------------------------------------------------------------
def _condition_fields(fields: tuple[str, ...], num_classes: int | None, limits: Limits) -> dict[str, Any]:
    n_max, chars = limits.max_images, limits.max_prompt_chars
    out: dict[str, Any] = {}
    if "class_labels" in fields:
        label = {"type": "integer", "minimum": 0, "maximum": (num_classes or 1) - 1}
        out["class_labels"] = (Int | list[Int] | None, Field(None, json_schema_extra={"anyOf": [
            label, {"type": "array", "items": label, "minItems": 1, "maxItems": n_max}, {"type": "null"}]},
            description=f"one label for every image, or one per image, in [0, {(num_classes or 1) - 1}]; null: "
                        "unconditional"))
    text = {"type": "string", "maxLength": chars}
    for name in ("prompt", "negative_prompt"):
        if name in fields:
            out[name] = (str | list[str] | None, Field(None, json_schema_extra={"anyOf": [
                text, {"type": "array", "items": text, "minItems": 1, "maxItems": n_max}, {"type": "null"}]},
                description="a string, or a list (images per prompt adjacent); null: the empty prompt"
                if name == "prompt" else "a string, or one per prompt; null: none"))
    if "guidance_scale" in fields:
        out["guidance_scale"] = (float | None, Field(None, ge=0, le=MAX_GUIDANCE, allow_inf_nan=False,
                                                     description="classifier-free guidance scale (the guidance "
                                                                 "embedding of a guidance-distilled model); null: "
                                                                 "the model's default"))
    if "true_cfg_scale" in fields:
        out["true_cfg_scale"] = (float | None, Field(None, ge=0, le=MAX_GUIDANCE, allow_inf_nan=False,
                                                     description="true classifier-free guidance against "
                                                                 "negative_prompt (Flux; > 1: a doubled batch per "
                                                                 "NFE); null: none"))
    return out


def _check_condition_values(body: BaseModel, num_classes: int | None, limits: Limits) -> None:
    """The per-value rules of the condition fields (the JSON Schema above, as code)."""
    labels = getattr(body, "class_labels", None)
    if labels is not None:
        items = labels if _is_list(labels) else [labels]
        if not 1 <= len(items) <= limits.max_images:
            raise ValueError(f"class_labels must list 1 to {limits.max_images} labels, got {len(items)}")
        if any(not 0 <= c < (num_classes or 1) for c in items):
            raise ValueError(f"class_labels must lie in [0, {(num_classes or 1) - 1}], got {labels}")
    for name in ("prompt", "negative_prompt"):
        value = getattr(body, name, None)
        if value is None:
            continue
        texts = value if _is_list(value) else [value]
        if not 1 <= len(texts) <= limits.max_images:
            raise ValueError(f"{name} must list 1 to {limits.max_images} prompts, got {len(texts)}")
        for text in texts:
            if len(text) > limits.max_prompt_chars:
                raise ValueError(f"{name} must be at most {limits.max_prompt_chars} characters, got {len(text)}")


def _prompt_count(prompt: Any) -> int:
    return len(prompt) if _is_list(prompt) else 1


def _negative_rules(n_max: int, absent_prompt_counts: bool) -> list[dict[str, Any]]:
    """``negative_prompt`` as a list holds one entry per prompt (a string or null prompt is one)."""
    rules = [{"if": {"required": ["prompt"], "properties": {"prompt": {"type": "array", "minItems": n, "maxItems": n}}},
              "then": _length_rule("negative_prompt", [n])} for n in range(1, n_max + 1)]
    single: dict[str, Any] = {"properties": {"prompt": {"not": {"type": "array"}}}}
    if not absent_prompt_counts:  # a patch without prompt: the branch's prompt decides (409)
        single["required"] = ["prompt"]
    rules.append({"if": single, "then": _length_rule("negative_prompt", [1])})
    return rules


def _present(field: str, kind: str) -> dict[str, Any]:
    """``field`` is given and not null (a JSON Schema ``if``)."""
    return {"required": [field], "properties": {field: {"type": kind}}}


def _edit_rules(editing: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON Schema of an edit's rules (:func:`_check_edit`)."""
    image = _present("image", "string")
    rules = [{"if": _present("mask_image", "string"), "then": image},
             {"if": _present("strength", "number"), "then": image}]
    if not editing["strength_with_mask"]:
        rules.append({"if": _present("mask_image", "string"), "then": {"properties": {
            "strength": {"anyOf": [{"const": 1}, {"type": "null"}]}, "inner_sampler": {"type": "null"}}}})
    if editing["mask_required"]:
        rules.append({"allOf": [image, _present("mask_image", "string")]})
    return rules


def _check_edit(body: Any, editing: dict[str, Any]) -> None:
    """An edit's rules, as code."""
    if body.image is None:
        for name in ("mask_image", "strength"):
            if getattr(body, name) is not None:
                raise ValueError(f"{name} edits an input: give image (an id from POST /v1/images) too")
    if editing["mask_required"] and (body.image is None or body.mask_image is None):
        raise ValueError("this model's network is a dedicated inpainting network: give image and mask_image")
    if not editing["strength_with_mask"] and body.mask_image is not None:
        if body.strength not in (None, 1):
            raise ValueError("strength: inpainting on this pixel-space model is nested DDRM, which starts from noise "
                             "(strength 1 or null)")
        if body.inner_sampler is not None:
            raise ValueError("inner_sampler: inpainting on this pixel-space model is nested DDRM, whose inner runs "
                             "are DDRM (leave inner_sampler null)")


def _create_model(condition: dict[str, Any], fields: tuple[str, ...], num_classes: int | None,
                  size_rule: tuple[tuple[int, int], int], limits: Limits, editing: dict[str, Any]) -> type[BaseModel]:
    (default_h, default_w), multiple = size_rule
    side = max(multiple, limits.max_side // multiple * multiple)
    n_max = limits.max_images
    inner = {"type": "integer", "minimum": 1, "maximum": limits.max_nfe}
    rules: list[dict[str, Any]] = [
        {"if": {"required": ["inner_steps"], "properties": {"inner_steps": {"not": {"type": "null"}}}},
         "then": {"properties": {"budget": {"type": "null"}}}},
        {"if": {"required": ["inner_steps"], "properties": {"inner_steps": {"type": "array"}}},
         "then": {"properties": {"outer_steps": {"type": "null"}}}},
    ]
    if "class_labels" in fields:
        rules += [_when("num_images", n, _length_rule("class_labels", [1, n]), default=1) for n in range(1, n_max + 1)]
    if "prompt" in fields:
        rules += [_when("num_images", n, _length_rule("prompt", [d for d in range(1, n + 1) if n % d == 0]), default=1)
                  for n in range(1, n_max + 1)]
    if "negative_prompt" in fields:
        rules += _negative_rules(n_max, absent_prompt_counts=True)
    rules += _edit_rules(editing)
    size = {"type": "integer", "multipleOf": multiple, "minimum": multiple, "maximum": side}
    return _model(
        "CreateSession", "``POST /v1/sessions``: a new session — a generation, or with ``image`` an edit "
        "(image-to-image; inpainting with ``mask_image``); null takes the project default.", {"allOf": rules},
        lambda body: _create_rules(body, num_classes, limits, multiple, side, editing), **condition,
        num_images=(Int, Field(1, ge=1, le=n_max, description="images in the batch")),
        budget=(_int(1, limits.max_nfe) | None, Field(None,
                                  description=f"NFEs the planned layout spends (null: {DEFAULT_BUDGET}); excluded by "
                                              "inner_steps")),
        outer_steps=(_int(1, limits.max_outer_steps) | None, Field(None,
                                       description="outer steps (frames); null: planned")),
        inner_steps=(Int | list[Int] | None, Field(None, json_schema_extra={"anyOf": [
            inner, {"type": "array", "items": inner, "minItems": 1, "maxItems": limits.max_outer_steps},
            {"type": "null"}]}, description="inner steps per outer step, or one count per outer step; the layout "
                                            f"then runs up to the server's {limits.max_nfe} NFEs")),
        inner_sampler=(Literal[tuple(sampler_names())] | None, Field(None, description="null: the project default")),
        seed=(Int, Field(0, ge=0, le=SEED_MAX)),
        deadline=(float | None, Field(None, gt=0, le=limits.max_deadline, allow_inf_nan=False,
                                      description="seconds; the session stops with its last complete frame")),
        height=(Int | None, Field(None, json_schema_extra={"anyOf": [size, {"type": "null"}]},
                                  description=f"pixels, a multiple of {multiple}; null: {default_h} (an edit: the "
                                              "image's, rounded down to the multiple; the input is resized to it)")),
        width=(Int | None, Field(None, json_schema_extra={"anyOf": [size, {"type": "null"}]},
                                 description=f"pixels, a multiple of {multiple}; null: {default_w} (an edit: the "
                                             "image's, rounded down to the multiple)")),
        compare_vanilla=(bool, Field(False, description="also run vanilla DDIM (η = 1) with the same NFEs and show "
                                                        "its x̂0 previews (an edit: the vanilla edit; DDRM for nested "
                                                        "DDRM)")),
        image=(ImageId | None, Field(None, description="edit this uploaded image (an id from POST /v1/images): "
                                                       "image-to-image, or inpainting with mask_image")),
        mask_image=(ImageId | None, Field(None, description="an uploaded mask of the image's (or the edit's) size: "
                                                            "white = repaint, black = keep (binarized at 128)")),
        strength=(Strength | None, Field(None, description="the fraction of the noise schedule an edit re-runs; "
                                                           f"null: {DEFAULT_STRENGTH['img2img']} (image-to-image), "
                                                           f"{DEFAULT_STRENGTH['inpaint']} (inpainting)")),
    )


def _create_rules(body: Any, num_classes: int | None, limits: Limits, multiple: int, side: int,
                  editing: dict[str, Any]) -> None:
    _check_condition_values(body, num_classes, limits)
    _check_edit(body, editing)
    if body.inner_steps is not None:
        if body.budget is not None:
            raise ValueError("give budget (the planner spends it) or inner_steps (a fixed layout), not both")
        counts = body.inner_steps if _is_list(body.inner_steps) else [body.inner_steps]
        if _is_list(body.inner_steps):
            if body.outer_steps is not None:
                raise ValueError("inner_steps as a list gives one count per outer step: leave outer_steps out")
            if not 1 <= len(counts) <= limits.max_outer_steps:
                raise ValueError(f"inner_steps must list 1 to {limits.max_outer_steps} counts, got {len(counts)}")
        if any(not 1 <= m <= limits.max_nfe for m in counts):
            raise ValueError(f"inner_steps must lie in [1, {limits.max_nfe}], got {body.inner_steps}")
    labels = getattr(body, "class_labels", None)
    if _is_list(labels) and len(labels) not in (1, body.num_images):
        raise ValueError(f"class_labels must hold one label or num_images ({body.num_images}), got {len(labels)}")
    prompt = getattr(body, "prompt", None)
    if _is_list(prompt) and body.num_images % len(prompt):
        raise ValueError(f"num_images ({body.num_images}) must be a multiple of the number of prompts ({len(prompt)})")
    negative = getattr(body, "negative_prompt", None)
    if _is_list(negative) and len(negative) != _prompt_count(prompt):
        raise ValueError(f"negative_prompt must hold one entry per prompt ({_prompt_count(prompt)}), got {len(negative)}")
    for name in ("height", "width"):
        value = getattr(body, name)
        if value is not None and (value % multiple or not multiple <= value <= side):
            raise ValueError(f"{name} must be a multiple of {multiple} in [{multiple}, {side}] pixels, got {value}")


def _patch_model(condition: dict[str, Any], fields: tuple[str, ...], num_classes: int | None,
                 limits: Limits) -> type[BaseModel]:
    extra: dict[str, Any] = {"minProperties": 1}
    if "negative_prompt" in fields:
        extra["allOf"] = _negative_rules(limits.max_images, absent_prompt_counts=False)
    return _model("ConditionPatch", "``PATCH …/condition``: only the fields given change (null resets one to the "
                  "model default).", extra, lambda body: _patch_rules(body, num_classes, limits), base=_Patch,
                  **condition)


def _patch_rules(body: Any, num_classes: int | None, limits: Limits) -> None:
    if not body.model_fields_set:
        raise ValueError(f"give at least one of {', '.join(type(body).model_fields)}")
    _check_condition_values(body, num_classes, limits)
    negative = getattr(body, "negative_prompt", None)
    if "prompt" in body.model_fields_set and _is_list(negative) and len(negative) != _prompt_count(body.prompt):
        raise ValueError(f"negative_prompt must hold one entry per prompt ({_prompt_count(body.prompt)}), "
                         f"got {len(negative)}")


def _edit_patch_model() -> type[BaseModel]:
    return _model("EditPatch", "``PATCH …/edit``: an edit's new mask and / or strength, from the next outer step on "
                  "(a new strength restarts a nested edit's outer process within the NFEs left).",
                  {"minProperties": 1}, _edit_patch_rules, base=_Patch,
                  mask_image=(ImageId, Field(None, json_schema_extra=_no_default,
                                             description="an uploaded mask (POST /v1/images) of the input's size: "
                                                         "white = repaint")),
                  strength=(Strength, Field(None, json_schema_extra=_no_default, description="the new strength, "
                                                                                            "in (0, 1]")))


def _no_default(schema: dict[str, Any]) -> None:
    """A field that may be absent but never null: its schema has no (null) default."""
    schema.pop("default", None)


def _edit_patch_rules(body: Any) -> None:
    if not body.model_fields_set:
        raise ValueError("give at least one of mask_image, strength")


def _fork_model(limits: Limits) -> type[BaseModel]:
    seed = {"type": "integer", "minimum": 0, "maximum": SEED_MAX}
    count_max = max(limits.max_images, limits.max_branches)
    per_branch = [_when("count", c, _length_rule("seeds", [c]), default=2) for c in range(1, count_max + 1)]
    rules = [{"if": {"properties": {"image": {"type": "null"}}},
              "then": {"allOf": [{"properties": {"count": {"maximum": limits.max_branches}}}, *per_branch]},
              "else": {"allOf": [{"properties": {"count": {"maximum": limits.max_images}}},
                                 _length_rule("seeds", [1])]}}]
    return _model(
        "ForkRequest", "``POST …/fork``: ``count`` children with their own noise, or with ``image`` one child holding "
        "``count`` variations of that image.", {"allOf": rules}, lambda body: _fork_rules(body, limits),
        count=(Int, Field(2, ge=1, le=count_max, description=f"new branches (at most {limits.max_branches}), or with "
                                                              f"image the variations (at most {limits.max_images})")),
        seeds=(list[Int] | None, Field(None, json_schema_extra={"anyOf": [
            {"type": "array", "items": seed, "minItems": 1, "maxItems": count_max}, {"type": "null"}]},
            description="one seed per new branch (count, or 1 with image); null: derived from the session seed")),
        image=(_int(0, limits.max_images - 1) | None, Field(None,
                                 description="continue this image of the batch as count variations in one branch")),
    )


def _fork_rules(body: Any, limits: Limits) -> None:
    cap = limits.max_images if body.image is not None else limits.max_branches
    if body.count > cap:
        what = "variations of one image" if body.image is not None else "new branches"
        raise ValueError(f"count must be at most {cap} ({what}), got {body.count}")
    wanted = 1 if body.image is not None else body.count
    if body.seeds is not None:
        if any(not 0 <= s <= SEED_MAX for s in body.seeds):
            raise ValueError(f"seeds must lie in [0, {SEED_MAX}]")
        if len(body.seeds) != wanted:
            what = "one seed (one new branch)" if body.image is not None else f"{body.count} seeds (one per branch)"
            raise ValueError(f"seeds must hold {what}, got {len(body.seeds)}")


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
