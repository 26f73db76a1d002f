#!/usr/bin/env python
"""Quality of the embedded digit model — thin `nested-diffusion evaluate` runs.

For each guidance scale: the project default (``--nested plan``) against vanilla DDIM (η = 1,
x̂0 previews), scored by the shipped digit classifier: accuracy (classified as the requested digit)
and digit-FD (Fréchet distance in its 128-d feature space to the 500 held-out MNIST-5k digits).
Seeds, batches and caches are evaluate's own; every run's command line is printed. ``--grid``
copies the default's final sample grid (one column per digit) to ``docs/samples.png``.

    python benchmarks/digits_quality.py --num-samples 300 --guidance default 1
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from nested_diffusion.cli import main as cli
from nested_diffusion.evaluation import load_results, value_at

CHECKPOINTS = (10, 20, 30, 50, 75, 100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: embedded)")
    p.add_argument("--num-samples", type=int, default=300)
    p.add_argument("--guidance", nargs="+", default=["default", "1"], help="guidance scales ('default' = the model's)")
    p.add_argument("--nested", nargs="+", default=["plan"], help="nested specs (evaluate's --nested)")
    p.add_argument("--grid", type=Path, default=None, help="write the default's final samples here (docs/samples.png)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/digits"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| method | guidance | " + " | ".join(f"acc @{n}" for n in CHECKPOINTS)
          + " | digit-FD @10 | digit-FD @100 |\n|---|---|" + "---|" * (len(CHECKPOINTS) + 2))
    rows = []
    for g in args.guidance:
        out = args.out / f"guidance-{g}"
        argv = ["evaluate", "--num-samples", str(args.num_samples), "--budget", "100", "--checkpoints",
                ",".join(map(str, CHECKPOINTS)), "--vanilla", "ddim:1", "--no-envelope", "--metric",
                "digit-fd,accuracy", "--quiet", "--out", str(out)]
        argv += ["--model", args.model] if args.model else []
        argv += ["--guidance", g] if g != "default" else []
        for spec in args.nested:
            argv += ["--nested", spec]
        print("$ nested-diffusion " + " ".join(shlex.quote(a) for a in argv), file=sys.stderr, flush=True)
        if cli(argv) != 0:
            sys.exit(f"evaluate failed: {argv}")
        result = load_results(out)
        for method in dict.fromkeys(r["method"] for r in result.rows):
            acc = [value_at(result, method, c, "accuracy") for c in CHECKPOINTS]
            rows.append(f"| {method} | {g} | " + " | ".join(f"{a * 100:.1f}%" for a in acc)
                        + f" | {value_at(result, method, 10, 'digit-fd'):.2f} | "
                          f"{value_at(result, method, 100, 'digit-fd'):.2f} |")
        if args.grid and g == "default":
            nested = next(m for m in dict.fromkeys(r["method"] for r in result.rows) if m.startswith("nested"))
            final = max((out / "grids" / nested).glob("nfe*.png"))
            args.grid.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(final, args.grid)
            print(f"wrote {args.grid} (from {final})", file=sys.stderr)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
