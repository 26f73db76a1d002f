"""Replay: a studio session's intervention log → its frames, with the library alone.

``replay(log)`` rebuilds the root session with ``NestedPipeline.anytime`` (same request, same seed,
for an edit the images the log carries, checked against their ids: :mod:`.build`), then walks each
branch step by step, applying at each step boundary exactly what the log pins there: forks first
(children start from the state after that step, with the condition that step used), then the changes
due at the next step (condition, mask, strength: :func:`~.editing.apply_changes`); a branch ends where
it was stopped, pruned or expired, or at its last frame within the session's NFE cap (a new strength
replans a branch, so each branch counts its own frames). The frames are the library's: bit-exact to a server that ran unbatched (``"batched":
false`` in the log); a batched server's frames differ from them only by the network's float rounding
at other batch sizes (BENCHMARKS.md §7). ``nested-diffusion generate --replay log.json`` is its
command line (:mod:`nested_diffusion.cli.replay`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from typing import Any

import torch

from ..images import MAX_PIXELS
from .build import build_lane, build_root, nfe_cap, session_checkpoints
from .editing import apply_changes
from .interventions import ROOT, VANILLA, due_changes, load_log
from .uploads import from_png

__all__ = ["replay", "branch_seed"]


def replay(log: dict[str, Any] | str | os.PathLike, pipeline: Any = None, *, device: str | torch.device | None = None,
           ) -> dict[str, list[Any]]:
    """Every branch's frames (:class:`~nested_diffusion.PipelineFrame`, PIL images) as the studio
    showed them, recomputed from ``log`` (a dict, a path or JSON text from ``GET
    /v1/sessions/{id}/log``). ``pipeline``: an already-loaded :class:`NestedPipeline`; by default the
    log's model is loaded with the log's dtype on ``device``. A forked branch's list starts with the
    parent frame it grew from, as in the studio."""
    log = load_log(log)
    if pipeline is None:
        from ..pipelines import NestedPipeline

        pipeline = NestedPipeline.from_pretrained(log.get("model"), dtype=getattr(torch, log.get("dtype", "float32")),
                                                  device=device, use_safetensors=True)
    request = log["request"]
    images = {key: from_png(key, data, max_pixels=MAX_PIXELS) for key, data in log.get("images", {}).items()}
    missing = sorted({request.get(k) for k in ("image", "mask_image")} - {None} - set(images))
    if missing:
        raise ValueError(f"the log's request names image {missing[0]!r}, which its \"images\" do not hold")
    try:
        root = build_root(pipeline, request, images)
    except KeyError as e:
        raise ValueError(f"the log's request has no {e.args[0]!r}: not a studio log of this version") from None
    cap = log.get("nfe_cap", nfe_cap(request, log["checkpoints"][-1]))
    checkpoints = session_checkpoints(root, cap)
    if checkpoints != log["checkpoints"]:
        raise ValueError(f"the log's checkpoints {log['checkpoints']} differ from this model's {checkpoints}: "
                         "not the model (or library version) that wrote the log")
    ops = log["ops"]
    stops: dict[str, int] = {}
    edits: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    forks: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for op in ops:
        if op["op"] == "stop":
            stops[op["branch"]] = min(op["at_step"], stops.get(op["branch"], math.inf))
        elif op["op"] == "condition":
            if op["changes"].get("mask_image") not in images.keys() | {None}:
                raise ValueError(f"a change of branch {op['branch']} names image {op['changes']['mask_image']!r}, "
                                 "which the log's \"images\" do not hold")
            edits[op["branch"]].append(op)
        elif op["op"] == "fork":
            forks[(op["parent"], op["at_step"])].append(op)

    frames: dict[str, list[Any]] = {}
    queue = collections.deque([(ROOT, root)])
    while queue:
        name, session = queue.popleft()
        out = frames[name] = [] if session.last_frame is None else [session.last_frame]
        pending, stop = list(edits[name]), stops.get(name, math.inf)
        while True:
            k = session.core.k  # the outer steps done
            for op in forks[(name, k)]:
                indices = None if op["image"] is None else [op["image"]] * op["count"]
                for child, seed in zip(op["branches"], op["seeds"]):
                    queue.append((child, session.fork(torch.Generator().manual_seed(seed), indices)))
            if k >= min(stop, len(session_checkpoints(session, cap))):
                break
            changes, pending = due_changes(pending, k + 1)
            if changes:
                apply_changes(session, changes, request, images)
            out.append(session.step())

    if request.get("compare_vanilla"):  # the vanilla lane: DDIM (η = 1) x̂0 previews at the nested checkpoints
        lane = build_lane(pipeline, request, checkpoints[-1], images)
        out = frames[VANILLA] = []
        for target in checkpoints[:min(stops.get(VANILLA, math.inf), len(checkpoints))]:
            frame = lane.run(max_nfe=target)
            out.append(dataclasses.replace(frame, images=lane.decode(frame.latents, "pil")))
    return frames


def branch_seed(log: dict[str, Any], branch: str) -> int:
    """The seed of ``branch``'s generator (a fork's, or the session's for the root and the lane)."""
    for op in log["ops"]:
        if op["op"] == "fork" and branch in op["branches"]:
            return op["seeds"][op["branches"].index(branch)]
    return log["request"]["seed"]
