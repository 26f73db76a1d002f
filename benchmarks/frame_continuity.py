"""Does a frame you keep look like the final image? Continuity of the plan's frames (BENCHMARKS.md §12.2).

Quality per frame is what §12 measures; this asks what a user who stops early, or picks a frame to keep, holds:
for each frame of a nested run (and each x̂0 preview of a vanilla run) (read from an `evaluate` folder's cached shards — no sampling here) the fraction
of samples whose most likely mixture component (`GaussianMixture.components`; exact samples: 100 % recovered)
is the final frame's, the fraction that changed component since the previous frame, and the RMS distance to
the final frame relative to the RMS distance between two independent exact samples (1: as unrelated as two
draws; 0: the same image). On the exact 8×8-digit mixture a component is a digit class.

    python benchmarks/frame_continuity.py benchmarks/results/b19/linear-b20 benchmarks/results/b19/pre-end/linear-b20
    nested-diffusion evaluate --model gmm:linear --num-samples 10000 --batch-size 1000 --budget 100 --no-envelope \
        --vanilla ddim:1 --vanilla unipc~logsnr --out benchmarks/results/b19/continuity-linear-b100   # previews too
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from nested_diffusion.evaluation import load_target
from nested_diffusion.evaluation.methods import Method


def frames_of(folder: Path) -> dict[str, dict[int, torch.Tensor]]:
    """Each nested and vanilla method of an evaluate folder with its frames {NFE: samples [N, d]} at the
    checkpoints it was scored at (a nested method's own frames only: ladder repeats dropped)."""
    config = json.loads((folder / "results.json").read_text())["config"]
    schedule = load_target(config["model"]).schedule
    runs = {}
    for spec in config["methods"]:
        if spec["kind"] == "envelope":
            continue
        method = Method.from_dict(spec)
        shards = sorted((folder / "shards" / method.name).glob("*.safetensors"))
        if not shards:
            continue
        parts = [load_file(str(path)) for path in shards]
        key = next(k for k in parts[0] if k.split("|")[1] != "pixels").split("|")[1]
        scored = sorted(int(k.split("|")[0]) for k in parts[0] if k.endswith(f"|{key}"))
        nfes = [n for n in method.frame_nfes(schedule) if n in scored] if method.kind == "nested" else scored
        runs[method.name] = {n: torch.cat([p[f"{n}|{key}"] for p in parts]) for n in nfes}
    if not runs:
        raise SystemExit(f"{folder}: no nested or vanilla shards")
    return runs


def continuity(gmm, frames: dict[int, torch.Tensor]) -> list[tuple[int, float, float, float]]:
    """(NFE, same component as the final %, changed since the previous frame %, distance to the final)."""
    nfes = sorted(frames)
    final = frames[nfes[-1]]
    comps = {n: gmm.components(frames[n]) for n in nfes}
    # E|x - x'|² for independent x, x' of the mixture = 2 tr Cov
    unrelated = (2 * torch.trace(gmm.covariance())).sqrt()
    rows, previous = [], None
    for n in nfes:
        same = (comps[n] == comps[nfes[-1]]).double().mean().item() * 100
        changed = float("nan") if previous is None else (comps[n] != comps[previous]).double().mean().item() * 100
        distance = ((frames[n] - final) ** 2).sum(1).mean().sqrt() / unrelated
        rows.append((n, same, changed, distance.item()))
        previous = n
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="evaluate output folders with a nested method's shards")
    args = p.parse_args()
    print("| run | frames (NFE: same component as the final / changed since the previous frame / distance to the "
          "final) |")
    print("|---|---|")
    for folder in args.folders:
        config = json.loads((folder / "results.json").read_text())["config"]
        gmm = load_target(config["model"]).gmm
        for name, frames in frames_of(folder).items():
            cells = [f"{n}: {same:.1f} % / " + ("–" if changed != changed else f"{changed:.1f} %") + f" / {dist:.3f}"
                     for n, same, changed, dist in continuity(gmm, frames)]
            print(f"| {folder.parent.name}/{folder.name}: {name} | {'; '.join(cells)} |")


if __name__ == "__main__":
    main()
