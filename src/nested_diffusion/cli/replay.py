"""``nested-diffusion generate --replay LOG --out DIR``: a studio session's frames, recomputed by the
library (:func:`nested_diffusion.studio.replay`), as PNGs with their provenance."""

from __future__ import annotations

import json
from typing import Any

from ..models import model_label
from .options import check_out, quiet_loading, resolve_device, staged_output

__all__ = ["run", "MARKER"]

MARKER = "replay.json"


def run(args: Any) -> int:
    """Every branch's frames as ``DIR/<branch>/step-KK-nfe-XXX-I.png`` (provenance in text chunks),
    built in a temporary folder and moved into place when complete."""
    from ..studio.build import initial_condition
    from ..studio.frames import frame_text, png_bytes
    from ..studio.interventions import VANILLA, condition_history, load_log
    from ..studio.replay import branch_seed, replay

    log = load_log(args.replay)
    check_out(args.out, MARKER, "nested-diffusion generate --replay")
    if args.model is not None:
        log = {**log, "model": args.model}
    if args.dtype != "float32":
        log = {**log, "dtype": args.dtype}
    with quiet_loading():
        frames = replay(log, device=resolve_device(args.device))
    initial = initial_condition(log["request"])
    model = model_label(log.get("model"))
    with staged_output(args.out, MARKER, "nested-diffusion generate --replay") as tmp:
        for branch, branch_frames in frames.items():
            (tmp / branch).mkdir()
            for f in branch_frames:  # a nested frame knows its step (a new strength replans); the lane's count NFEs
                step = sum(c <= f.nfe for c in log["checkpoints"]) if branch == VANILLA else f.step
                history = condition_history(initial, log["ops"], branch, step)
                for i, image in enumerate(f.images):
                    text = frame_text(model=model, session=log.get("session_id", ""), branch=branch,
                                      kind="vanilla" if branch == VANILLA else "nested", seed=branch_seed(log, branch),
                                      session_seed=log["request"]["seed"], step=step, num_steps=len(log["checkpoints"]) if branch == VANILLA else f.num_steps,
                                      nfe=f.nfe, timestep=f.timestep, image=i, history=history)
                    (tmp / branch / f"step-{step:02d}-nfe-{f.nfe:03d}-{i}.png").write_bytes(png_bytes(image, text))
        summary = {"log": str(args.replay), "model": model, "batched": log.get("batched", False),
                   "branches": {b: [f.nfe for f in fs] for b, fs in frames.items()}}
        (tmp / MARKER).write_text(json.dumps(summary, indent=2))
    n = sum(len(fs) for fs in frames.values())
    print(f"replayed {len(frames)} branches, {n} frames: {args.out}/<branch>/step-KK-nfe-XXX-I.png")
    if log.get("batched"):
        print("  (the server batched its network calls: its frames equal these within the float rounding of other "
              "batch sizes, BENCHMARKS.md §7)")
    return 0
