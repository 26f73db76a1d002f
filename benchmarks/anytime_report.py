"""Tables of BENCHMARKS.md §12 from the folders ``benchmarks/anytime_envelope.sh`` writes.

For each schedule and budget: the planned default's frames (FD, envelope-best FD at the same NFEs, ratio, NFE
efficiency — read from each run's efficiency.csv), the exact-sample floor, and which envelope member wins at
each NFE count (the envelope folder's results). Frames are the plan's own (``Method.frame_nfes``); the other
ladder checkpoints only repeat the frame a user holds there.

    python benchmarks/anytime_report.py [--out benchmarks/results/b19] [FOLDER_NAME...]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from nested_diffusion.evaluation import envelope_winners, load_results, load_target
from nested_diffusion.evaluation.methods import Method

BUDGETS = (20, 30, 50, 100)


def frames_table(root: Path, name: str) -> list[str]:
    lines = []
    for b in BUDGETS:
        folder = root / f"{name}-b{b}"
        if not (folder / "efficiency.csv").is_file():
            lines.append(f"| {b} | (not run) | | | | |")
            continue
        config = json.loads((folder / "results.json").read_text())["config"]
        method = next(Method(**{k: tuple(v) if isinstance(v, list) else v for k, v in m.items() if k != "name"})
                      for m in config["methods"] if m["kind"] == "nested")
        frames = method.frame_nfes(load_target(config["model"]).schedule)
        rows = {int(r["nfe"]): r for r in csv.DictReader((folder / "efficiency.csv").open()) if r["kind"] == "nested"}
        floor = config.get("floor", {}).get("gmm-fd", {})
        cells = [f"{n}: {float(rows[n]['value']):.4g} / {float(rows[n]['value']) / float(rows[n]['ratio']):.4g} / "
                 f"{float(rows[n]['ratio']):.2f} / **{float(rows[n]['efficiency']):.2f}**" for n in frames if n in rows]
        judged = [float(rows[n]["efficiency"]) for n in frames if n in rows and n >= 0.2 * b]
        worst = [float(rows[n]["ratio"]) for n in frames if n in rows and n >= 0.2 * b]
        lines.append(f"| {b} | {'<br>'.join(cells)} | {min(judged):.2f} | {max(worst):.2f} | "
                     f"{floor.get('mean', float('nan')):.4f} ± {floor.get('sd', float('nan')):.4f} | "
                     f"{config['num_samples']} |")
    return lines


def winners_across(root: Path, names: list[str]) -> list[str]:
    """One row per NFE count, one column per schedule: the best envelope member there and its FD."""
    curves = {}
    for name in names:
        result = load_results(root / name)
        members = {r["method"] for r in result.rows if r["kind"] == "envelope" and r["method"] != "envelope-best"}
        curves[name] = {m: {r["nfe"]: r["value"] for r in result.rows if r["method"] == m} for m in members}
    nfes = sorted({n for c in curves.values() for m in c.values() for n in m})
    lines = ["| NFE | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for n in nfes:
        cells = []
        for name in names:
            ranked = sorted((c[n], m.removeprefix("envelope-")) for m, c in curves[name].items() if n in c)
            cells.append(f"{ranked[0][1]} {ranked[0][0]:.4g}" if ranked else "–")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/b19"))
    p.add_argument("names", nargs="*", default=["linear", "cosine", "cosine-n2000", "scaled_linear", "flow",
                                                "flow-n2000", "flow3", "flow3-n2000"])
    p.add_argument("--winners", action="store_true", help="one table of envelope winners across the schedules")
    args = p.parse_args()
    present = [n for n in args.names if (args.out / n / "results.json").is_file()]
    if args.winners:
        print("\n".join(winners_across(args.out, present)))
        return
    for name in args.names:
        if not (args.out / name / "results.json").is_file():
            continue
        print(f"\n### {name}\n")
        print("| budget | frame NFE: FD / envelope-best / ratio / **efficiency** | min efficiency ≥ 20 % | "
              "max ratio ≥ 20 % | floor (exact samples) | samples |")
        print("|---|---|---|---|---|---|")
        print("\n".join(frames_table(args.out, name)))
        print("\nEnvelope members, best at each N:\n")
        print(envelope_winners(load_results(args.out / name), "gmm-fd"))


if __name__ == "__main__":
    main()
