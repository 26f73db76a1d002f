"""The intervention log: everything needed to reproduce a studio session's frames with the library
(bit-exactly for a server that ran unbatched; its ``"batched"`` field says).

A log is the session's creation request (seed, condition, layout; for an edit its ``image``,
``mask_image`` and ``strength``), the images an edit used (``"images"``: each id → the PNG inline, its id
the SHA-256 of its pixels: :mod:`.uploads`) and the ordered list of interventions, each pinned to a step
boundary of one branch:

* ``{"op": "condition", "branch", "rev", "applies_from_step", "changes"}`` — ``changes`` (a partial
  condition; for an edit also a new ``mask_image`` id or ``strength``) is first seen by outer step
  ``applies_from_step``; several edits due at one step apply in ``rev`` order, the last one winning per
  field;
* ``{"op": "fork", "parent", "at_step", "branches", "seeds", "image", "count"}`` — each child starts
  from the parent's state after step ``at_step``, with the parent's condition at that step and its
  own generator ``torch.Generator().manual_seed(seed)``; with ``image`` one child holds ``count``
  copies of that image (``PipelineSession.fork(indices=[image] * count)``);
* ``{"op": "stop", "branch", "at_step", "reason"}`` — the branch keeps its frames up to ``at_step``
  (``reason``: ``user``, ``deadline``, ``pruned``, ``expired``, ``error``);
* ``{"op": "pause" | "resume", "branch", "at_step"}`` — recorded for the record; a paused step is
  discarded and recomputed identically, so pauses change no number.

:mod:`.replay` turns a log back into frames; :func:`condition_history` is what a frame's PNG
carries.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["LOG_FORMAT", "LOG_VERSION", "ROOT", "load_log", "fork_seed", "condition_history", "lineage",
           "due_changes"]

LOG_FORMAT = "nested-diffusion/studio-log"
#: version 2 added edits (the request's image fields, ``"images"``); version 1 logs read as before
LOG_VERSION = 2
READ_VERSIONS = (1, 2)
#: the first branch of every session
ROOT = "b0"
#: the vanilla x̂0-preview lane of a session created with ``compare_vanilla``
VANILLA = "v0"


_OP_FIELDS = {"condition": {"branch", "rev", "applies_from_step", "changes"},
              "fork": {"parent", "at_step", "branches", "seeds", "image", "count"},
              "stop": {"branch", "at_step"}, "pause": {"branch", "at_step"}, "resume": {"branch", "at_step"}}


def fork_seed(session_seed: int, branch_number: int) -> int:
    """Default seed of the ``branch_number``-th branch of a session (the root uses the session seed)."""
    return (session_seed * 1_000_003 + branch_number) % 2**63


def load_log(log: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A log as a dict (from a dict, a JSON file path or JSON text), checked for its format."""
    if isinstance(log, (str, Path)):
        text = str(log)
        if isinstance(log, Path) or not text.lstrip().startswith("{"):
            path = Path(log).expanduser()
            if not path.is_file():
                raise ValueError(f"replay log {text!r} is not a file")
            text = path.read_text()
        try:
            log = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"replay log is not JSON: {e}") from None
    if not isinstance(log, dict) or log.get("format") != LOG_FORMAT:
        raise ValueError(f"not a studio log: expected \"format\": {LOG_FORMAT!r} (GET /v1/sessions/{{id}}/log)")
    if log.get("version") not in READ_VERSIONS:
        raise ValueError(f"studio log version {log.get('version')!r} is not supported (this library reads "
                         f"{', '.join(map(str, READ_VERSIONS))})")
    for key in ("request", "ops", "checkpoints"):
        if key not in log:
            raise ValueError(f"studio log has no {key!r}")
    if not isinstance(log.get("images", {}), dict):
        raise ValueError("studio log \"images\" must map image ids to PNG data URLs")
    if log.get("dtype", "float32") not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"studio log dtype must be float32, float16 or bfloat16, got {log.get('dtype')!r}")
    for i, op in enumerate(log["ops"]):
        need = _OP_FIELDS.get(op.get("op")) if isinstance(op, dict) else None
        if need is None or not need <= set(op):
            raise ValueError(f"studio log op {i} is malformed: {op!r} (ops: {sorted(_OP_FIELDS)}, "
                             "each with its fields)")
    return log


def lineage(ops: list[dict[str, Any]], branch: str) -> list[tuple[str, dict[str, Any] | None]]:
    """``[(branch, fork op that created it or None), …]`` from the root down to ``branch``."""
    created = {b: op for op in ops if op["op"] == "fork" for b in op["branches"]}
    chain = [(branch, created.get(branch))]
    while chain[-1][1] is not None:
        parent = chain[-1][1]["parent"]
        chain.append((parent, created.get(parent)))
    return chain[::-1]


def condition_history(initial: dict[str, Any], ops: list[dict[str, Any]], branch: str, step: int) -> list[dict[str, Any]]:
    """The conditions behind ``branch``'s frame at ``step``: the initial condition, then every edit
    and fork along its lineage that the frame saw."""
    history: list[dict[str, Any]] = [{"rev": 0, "applies_from_step": 1, "condition": initial}]
    chain = lineage(ops, branch)
    for i, (name, created) in enumerate(chain):
        upto = chain[i + 1][1]["at_step"] if i + 1 < len(chain) else step
        if created is not None:
            k = created["branches"].index(name)
            history.append({"fork": {"parent": created["parent"], "at_step": created["at_step"], "branch": name,
                                     "seed": created["seeds"][k], "image": created["image"]}})
        history.extend({"rev": op["rev"], "applies_from_step": op["applies_from_step"], "changes": op["changes"]}
                       for op in ops if op["op"] == "condition" and op["branch"] == name
                       and op["applies_from_step"] <= upto)
    return history


def due_changes(pending: list[dict[str, Any]], step: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Merge the condition edits due by outer ``step`` (``applies_from_step <= step``) in ``rev``
    order — the last edit wins per field — and return ``(changes, edits still pending)``."""
    due = sorted((p for p in pending if p["applies_from_step"] <= step), key=lambda p: p["rev"])
    changes: dict[str, Any] = {}
    for p in due:
        changes.update(p["changes"])
    return changes, [p for p in pending if p["applies_from_step"] > step]
