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
        frames = _plan_frames(config)
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


def sets_table(root: Path, name: str) -> list[str]:
    """Frames on every sample set (``-s<seed>`` folders next to a budget's: the same plan, other noise), their
    mean, and the mean's NFE efficiency against the envelope of the main set."""
    from nested_diffusion.evaluation import nfe_efficiency

    lines = []
    for b in BUDGETS:
        main = root / f"{name}-b{b}"
        extra = sorted(main.parent.glob(f"{main.name}-s*"))
        if not (main / "results.json").is_file() or not extra:
            continue
        result = load_results(main)
        config = json.loads((main / "results.json").read_text())["config"]
        noise = config.get("floor", {}).get("gmm-fd", {}).get("sd", 0.0)
        method = next(r["method"] for r in result.rows if r["kind"] == "nested")
        sets = [result] + [load_results(folder) for folder in extra]
        frames = [n for n in _plan_frames(config) if any(r["method"] == method and r["nfe"] == n for r in result.rows)]
        cells, judged = [], []
        per_set = {n: [s.value(method, n, "gmm-fd") for s in sets] for n in frames}
        means = {n: sum(values) / len(values) for n, values in per_set.items()}
        averaged = type(result)(rows=[r for r in result.rows if r["method"] != method]
                                + [{**r, "value": means[r["nfe"]]} for r in result.rows
                                   if r["method"] == method and r["metric"] == "gmm-fd" and r["nfe"] in means])
        for n, values in per_set.items():
            eff = nfe_efficiency(averaged, method, "gmm-fd", n, "envelope-best", noise=noise)
            if n >= 0.2 * b:
                judged.append(eff)
            cells.append(f"{n}: {' / '.join(f'{v:.4f}' for v in values)} → {means[n]:.4f} / **{eff:.2f}**")
        lines.append(f"| {b} | {'<br>'.join(cells)} | {min(judged):.2f} | {len(sets)} |")
    return lines


def _plan_frames(config: dict) -> list[int]:
    """The NFEs after each frame of the run's nested method (its plan)."""
    method = next(Method(**{k: tuple(v) if isinstance(v, list) else v for k, v in m.items() if k != "name"})
                  for m in config["methods"] if m["kind"] == "nested")
    return method.frame_nfes(load_target(config["model"]).schedule)


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
        sets = sets_table(args.out, name)
        if sets:
            print("\nThe same frames on independent sample sets (FD per set → mean / **the mean's efficiency**):\n")
            print("| budget | frame NFE: FD per set → mean / **efficiency** | min efficiency ≥ 20 % | sets |")
            print("|---|---|---|---|")
            print("\n".join(sets))
        print("\nEnvelope members, best at each N:\n")
        print(envelope_winners(load_results(args.out / name), "gmm-fd"))


if __name__ == "__main__":
    main()
