"""Tables of BENCHMARKS.md §12 from the folders ``benchmarks/anytime_envelope.sh`` writes.

For each schedule and budget: the planned default's frames (FD, envelope-best FD at the same NFEs, ratio, NFE
efficiency — read from each run's efficiency.csv), the exact-sample floor, and which envelope member wins at
each NFE count (the envelope folder's results). Frames are the plan's own (``Method.frame_nfes``); the other
ladder checkpoints only repeat the frame a user holds there.

    python benchmarks/anytime_report.py [--out benchmarks/results/b19] [--winners | --summary | --before OLD_TREE]
        [FOLDER_NAME...]
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


def _sets(base: Path, folder: str, frames: list[int] | None = None) -> tuple[str, dict[int, list[float]]]:
    """The nested method of ``base/folder`` and its FD at ``frames`` (default: the plan's, where scored) on
    every sample set: that folder, then its ``-s<seed>`` siblings (the same plan, other noise)."""
    main = load_results(base / folder)
    method = next(r["method"] for r in main.rows if r["kind"] == "nested")
    if frames is None:
        config = json.loads((base / folder / "results.json").read_text())["config"]
        frames = [n for n in _plan_frames(config) if any(r["method"] == method and r["nfe"] == n for r in main.rows)]
    sets = [main] + [load_results(f) for f in sorted(base.glob(f"{folder}-s*"))]
    return method, {n: [s.value(method, n, "gmm-fd") for s in sets] for n in frames}


def _efficiency(reference: Path, method: str, values: dict[int, float]) -> dict[int, float]:
    """NFE efficiency of ``values`` ({NFE: FD} of ``method``) against the envelope of the run in ``reference``,
    with that run's floor noise."""
    from nested_diffusion.evaluation import nfe_efficiency

    result = load_results(reference)
    noise = json.loads((reference / "results.json").read_text())["config"].get("floor", {}).get("gmm-fd", {}).get(
        "sd", 0.0)
    rows = [r for r in result.rows if r["kind"] == "envelope"] + [
        dict(method=method, kind="nested", nfe=n, metric="gmm-fd", value=v) for n, v in values.items()]
    combined = type(result)(rows=rows)
    return {n: nfe_efficiency(combined, method, "gmm-fd", n, "envelope-best", noise=noise) for n in values}


def _mean(per_set: dict[int, list[float]]) -> dict[int, float]:
    return {n: sum(values) / len(values) for n, values in per_set.items()}


def sets_table(root: Path, name: str) -> list[str]:
    """Frames on every sample set (``-s<seed>`` folders next to a budget's: the same plan, other noise), their
    mean, and the mean's NFE efficiency against the envelope of the main set."""
    lines = []
    for b in BUDGETS:
        folder = f"{name}-b{b}"
        if not (root / folder / "results.json").is_file() or not list(root.glob(f"{folder}-s*")):
            continue
        method, per_set = _sets(root, folder)
        means = _mean(per_set)
        effs = _efficiency(root / folder, method, means)
        cells = [f"{n}: {' / '.join(f'{v:.4f}' for v in values)} → {means[n]:.4f} / **{effs[n]:.2f}**"
                 for n, values in per_set.items()]
        judged = min(e for n, e in effs.items() if n >= 0.2 * b)
        lines.append(f"| {b} | {'<br>'.join(cells)} | {judged:.2f} | {len(next(iter(per_set.values())))} |")
    return lines


#: row labels of the summary table: which schedules tuned the plan and which are held out of its search
LABELS = {"linear": "linear (tuned)", "cosine": "cosine (tuned)", "scaled_linear": "scaled-linear (held out)",
          "flow": "flow shift 1 (held out)", "flow3": "flow shift 3 (held out)"}


def summary_table(root: Path, names: list[str]) -> list[str]:
    """BENCHMARKS.md §12's table: per schedule and budget, the plan's frames on evaluate's set (FD /
    envelope-best / ratio / efficiency), the verdict columns over frames >= 20 % of the budget, and the 3-set
    means with their efficiency."""
    lines = ["| schedule | budget | frames (NFE: FD / envelope-best / ratio / **efficiency**) | min efficiency | "
             "max ratio | 3 sets: NFE: mean FD / **efficiency** | min (3 sets) |", "|---|---|---|---|---|---|---|"]
    for name in names:
        for b in BUDGETS:
            folder = root / f"{name}-b{b}"
            if not (folder / "efficiency.csv").is_file():
                continue
            frames = _plan_frames(json.loads((folder / "results.json").read_text())["config"])
            rows = {int(r["nfe"]): r for r in csv.DictReader((folder / "efficiency.csv").open())
                    if r["kind"] == "nested"}
            cells, judged, worst = [], [], []
            for n in frames:
                value, ratio, eff = (float(rows[n][k]) for k in ("value", "ratio", "efficiency"))
                cells.append(f"{n}: {value:.3g} / {value / ratio:.3g} / {ratio:.2f} / **{eff:.2f}**")
                if n >= 0.2 * b:
                    judged.append(eff)
                    worst.append(ratio)
            means, smin = "–", "–"
            if list(root.glob(f"{folder.name}-s*")):
                method, per_set = _sets(root, folder.name, [n for n in frames if n >= 0.2 * b])
                mean = _mean(per_set)
                effs = _efficiency(folder, method, mean)
                means = "; ".join(f"{n}: {mean[n]:.4f} / **{effs[n]:.2f}**" for n in mean)
                smin = f"{min(effs.values()):.2f}"
            lines.append(f"| {LABELS.get(name, name)} | {b} | {'; '.join(cells)} | **{min(judged):.2f}** | "
                         f"{max(worst):.2f} | {means} | **{smin}** |")
    return lines


def before_after(root: Path, before: Path, names: list[str]) -> list[str]:
    """The plan of ``before`` (an older result tree, same layout of folders) and of ``root``, both against
    ``root``'s envelope: min NFE efficiency over frames >= 20 % of the budget on evaluate's set and for the 3-set
    mean, and the 3-set mean FD of those frames."""
    lines = ["| schedule | budget | before: min efficiency (evaluate's set / 3 sets) | after | 3-set mean FD, "
             "frames ≥ 20 %: before → after |", "|---|---|---|---|---|"]
    for name in names:
        for b in BUDGETS:
            folder = f"{name}-b{b}"
            if not (root / folder / "results.json").is_file() or not (before / folder / "results.json").is_file():
                continue
            config = json.loads((root / folder / "results.json").read_text())["config"]
            frames = [n for n in _plan_frames(config) if n >= 0.2 * b]
            cells, means = [], []
            for base in (before, root):
                method, per_set = _sets(base, folder, frames)
                mean = _mean(per_set)
                first = {n: values[0] for n, values in per_set.items()}
                effs = [min(_efficiency(root / folder, method, values).values()) for values in (first, mean)]
                cells.append(f"{effs[0]:.2f} / {effs[1]:.2f}")
                means.append(mean)
            fds = "; ".join(f"{n}: {means[0][n]:.4f} → {means[1][n]:.4f}" for n in frames)
            lines.append(f"| {LABELS.get(name, name)} | {b} | {cells[0]} | **{cells[1]}** | {fds} |")
    return lines


def _plan_frames(config: dict) -> list[int]:
    """The NFEs after each frame of the run's nested method (its plan)."""
    method = next(Method.from_dict(m) for m in config["methods"] if m["kind"] == "nested")
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
    p.add_argument("--summary", action="store_true", help="one table of the plan's frames across the schedules")
    p.add_argument("--before", type=Path, help="an older result tree: its plan against this tree's envelope")
    args = p.parse_args()
    present = [n for n in args.names if (args.out / n / "results.json").is_file()]
    if args.winners:
        print("\n".join(winners_across(args.out, present)))
        return
    if args.before:
        names = [n for n in args.names if (args.before / f"{n}-b20").is_dir()]
        print("\n".join(before_after(args.out, args.before, names)))
        return
    if args.summary:
        print("\n".join(summary_table(args.out, present)))
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
