"""Replay: a studio session's intervention log → its frames, bit-exactly, with the library alone.

``replay(log)`` rebuilds the root session with ``NestedPipeline.anytime`` (same request, same seed),
then walks each branch step by step, applying at each step boundary exactly what the log pins
there: forks first (children start from the state after that step, with the condition that step
used), then the condition edits due at the next step; a branch ends where it was stopped, pruned or
expired. This is also ``nested-diffusion generate --replay log.json``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any

import torch

from .interventions import ROOT, VANILLA, condition_history, due_changes, load_log

__all__ = ["replay", "run_cli"]

CONDITION_FIELDS = ("class_labels", "prompt", "negative_prompt", "guidance_scale")


def replay(log: dict[str, Any] | str | os.PathLike, pipeline: Any = None, *, device: str | torch.device | None = None,
           ) -> dict[str, list[Any]]:
    """Every branch's frames (:class:`~nested_diffusion.PipelineFrame`, PIL images) as the studio
    showed them, recomputed from ``log`` (a dict, a path or JSON text from ``GET
    /v1/sessions/{id}/log``). ``pipeline``: an already-loaded :class:`NestedPipeline`; by default the
    log's model is loaded with the log's dtype on ``device``. A forked branch's list starts with the
    parent frame it grew from, as in the studio."""
    from .schemas import CreateSession
    from .sessions import session_checkpoints, vanilla_kwargs

    log = load_log(log)
    if pipeline is None:
        from ..pipelines import NestedPipeline

        pipeline = NestedPipeline.from_pretrained(log.get("model"), dtype=getattr(torch, log.get("dtype", "float32")),
                                                  device=device, use_safetensors=True)
    request = CreateSession(**log["request"])
    root = pipeline.anytime(**request.library_kwargs(), generator=torch.Generator().manual_seed(request.seed),
                            output_type="pil")
    checkpoints = session_checkpoints(root, request.budget)
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
            edits[op["branch"]].append(op)
        elif op["op"] == "fork":
            forks[(op["parent"], op["at_step"])].append(op)

    frames: dict[str, list[Any]] = {}
    queue = collections.deque([(ROOT, root)])
    while queue:
        name, session = queue.popleft()
        out = frames[name] = [] if session.last_frame is None else [session.last_frame]
        pending, end = list(edits[name]), min(stops.get(name, math.inf), len(checkpoints))
        while True:
            k = sum(c <= session.nfe for c in checkpoints)
            for op in forks[(name, k)]:
                indices = None if op["image"] is None else [op["image"]] * op["count"]
                for child, seed in zip(op["branches"], op["seeds"]):
                    queue.append((child, session.fork(torch.Generator().manual_seed(seed), indices)))
            if k >= end:
                break
            changes, pending = due_changes(pending, k + 1)
            if changes:
                session.set_condition(**changes)
            out.append(session.step())

    if request.compare_vanilla:  # the vanilla lane: DDIM (η = 1) x̂0 previews at the nested checkpoints
        lane = pipeline.vanilla(**vanilla_kwargs(request.model_dump(), checkpoints[-1]),
                                generator=torch.Generator().manual_seed(request.seed), output_type="latent")
        out = frames[VANILLA] = []
        for target in checkpoints[:min(stops.get(VANILLA, math.inf), len(checkpoints))]:
            frame = lane.run(max_nfe=target)
            out.append(dataclasses.replace(frame, images=lane.decode(frame.latents, "pil")))
    return frames


MARKER = "replay.json"


def run_cli(args: Any) -> int:
    """``nested-diffusion generate --replay LOG --out DIR``: the frames of every branch as PNGs
    (``DIR/<branch>/step-KK-nfe-XXX-I.png``, provenance in text chunks), built in a temporary folder
    and moved into place when complete."""
    from ..cli.options import check_out, quiet_loading, resolve_device, staged_output
    from .frames import frame_text, png_bytes

    log = load_log(args.replay)
    check_out(args.out, MARKER, "nested-diffusion generate --replay")
    if args.model is not None:
        log = {**log, "model": args.model}
    if args.dtype != "float32":
        log = {**log, "dtype": args.dtype}
    with quiet_loading():
        frames = replay(log, device=resolve_device(args.device))
    initial = {k: log["request"][k] for k in CONDITION_FIELDS}
    model = log.get("model") or "embedded:digits"
    with staged_output(args.out, MARKER, "nested-diffusion generate --replay") as tmp:
        for branch, branch_frames in frames.items():
            (tmp / branch).mkdir()
            for f in branch_frames:
                step = sum(c <= f.nfe for c in log["checkpoints"])
                history = condition_history(initial, log["ops"], branch, step)
                for i, image in enumerate(f.images):
                    text = frame_text(model=model, session=log.get("session_id", ""), branch=branch,
                                      kind="vanilla" if branch == VANILLA else "nested", seed=_branch_seed(log, branch),
                                      session_seed=log["request"]["seed"], step=step, num_steps=len(log["checkpoints"]),
                                      nfe=f.nfe, timestep=f.timestep, image=i, history=history)
                    (tmp / branch / f"step-{step:02d}-nfe-{f.nfe:03d}-{i}.png").write_bytes(png_bytes(image, text))
        summary = {"log": str(args.replay), "model": model,
                   "branches": {b: [f.nfe for f in fs] for b, fs in frames.items()}}
        (tmp / MARKER).write_text(json.dumps(summary, indent=2))
    n = sum(len(fs) for fs in frames.values())
    print(f"replayed {len(frames)} branches, {n} frames: {args.out}/<branch>/step-KK-nfe-XXX-I.png")
    return 0


def _branch_seed(log: dict[str, Any], branch: str) -> int:
    for op in log["ops"]:
        if op["op"] == "fork" and branch in op["branches"]:
            return op["seeds"][op["branches"].index(branch)]
    return log["request"]["seed"]
