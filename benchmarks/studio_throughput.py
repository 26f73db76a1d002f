#!/usr/bin/env python
"""Serving throughput of the studio (issue 18): batched vs unbatched vs the library, and the limit.

For 1, 4, 8 and 16 concurrent one-image sessions of the embedded digit model (default budget 100 NFEs,
guidance = the model's default, every session a different class and seed), in one process with one
torch thread, measured in the same run:

* ``library``: the sessions as ``NestedPipeline.anytime`` iterators advanced round-robin, one outer
  step at a time, by a plain loop (what serving them one after another costs);
* ``unbatched``: a studio (``create_app(..., batching=False)``'s ``Studio``) with its worker thread,
  sessions created through its registry (no HTTP: the HTTP cost is §7's load test);
* ``batched``: the same with step-level batching (the default);
* ``limit``: the network alone at the packed batch size — ``adapter(x, t, class_labels=…,
  guidance_scale=…)`` with that many rows and per-row timesteps — as images·NFE per second.

Throughput = images × NFEs of all sessions / wall time from the first creation to the last frame,
and the same per CPU second of this process (``time.process_time``: robust to time other processes
take from a shared machine, where wall-clock figures swing by tens of percent).
Time per frame = the interval between consecutive frames of a session (the first from its creation),
p50 / p95 over every frame of every session of every round. Rounds alternate the modes so that load
drift hits them alike; medians over rounds. Also the batched frames' distance to the library's (same
seeds): the tolerance that batching costs.

    OMP_NUM_THREADS=1 python benchmarks/studio_throughput.py --rounds 3

Results: printed as markdown and saved to benchmarks/results/studio_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def requests(n: int, budget: int) -> list[dict]:
    return [{"class_labels": [k % 10], "budget": budget, "seed": 1000 + k} for k in range(n)]


def library_round(pipe, reqs):
    sessions = [pipe.anytime(class_labels=r["class_labels"], budget=r["budget"],
                             generator=torch.Generator().manual_seed(r["seed"])) for r in reqs]
    start, cpu = time.perf_counter(), time.process_time()
    last = [start] * len(sessions)
    intervals, finals = [], []
    while not all(s.done for s in sessions):
        for k, s in enumerate(sessions):
            if s.done:
                continue
            s.step()
            now = time.perf_counter()
            intervals.append(now - last[k])
            last[k] = now
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finals = [(s.last_frame.latents, np.asarray(s.last_frame.images[0])) for s in sessions]
    return wall, cpu, intervals, finals, sum(s.nfe for s in sessions)


def studio_round(pipe, reqs, batching: bool):
    from nested_diffusion.studio.limits import Limits
    from nested_diffusion.studio.service import Studio

    studio = Studio([pipe], batching=batching, limits=Limits(max_sessions=max(8, len(reqs))))
    contract = studio.contract.CreateSession
    studio.start()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        made = [studio.registry.create(contract.model_validate(r)) for r in reqs]
        while not all(s.terminal for s in made):
            time.sleep(0.01)
        cpu = time.process_time() - cpu
        wall = max(s.started + max(f.elapsed for f in s.branches["b0"].frames.values()) for s in made) - start
        intervals, finals, nfe = [], [], 0
        for s in made:
            b = s.branches["b0"]
            times = [s.started - start] + [s.started - start + b.frames[k].elapsed for k in sorted(b.frames)]
            times[0] = 0.0 if s is made[0] else times[0]
            intervals += [y - x for x, y in zip(times, times[1:])]
            finals.append((b.session.last_frame.latents, np.asarray(b.frames[max(b.frames)].images[0])))
            nfe += b.nfe
        calls = studio.workers[0].batcher.calls
    finally:
        studio.stop()
    return wall, cpu, intervals, finals, nfe, calls


def network_limit(pipe, rows: int, calls: int = 20) -> tuple[float, float]:
    """Images·NFE per wall and per CPU second of the network alone at ``rows`` rows (guidance as the
    sessions use it), medians over ``calls`` calls."""
    a = pipe.adapter
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, *a.latent_shape(1)[1:], generator=g).to(a.device, a.dtype)
    t = torch.randint(0, 1000, (rows,), generator=g).to(a.device)
    kwargs = a.condition(rows, class_labels=[k % 10 for k in range(rows)])
    times, cpus = [], []
    with torch.inference_mode():
        a(x, t, **kwargs)
        for _ in range(calls):
            t0, c0 = time.perf_counter(), time.process_time()
            a(x, t, **kwargs)
            if a.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return rows / statistics.median(times), rows / statistics.median(cpus)


def percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="torch device of the model (cuda on a GPU machine)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "studio_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from nested_diffusion import NestedPipeline

    pipe = NestedPipeline.from_pretrained(device=args.device)
    library_round(pipe, requests(2, 10))  # warm-up
    studio_round(pipe, requests(2, 10), True)
    results = {"loadavg_start": os.getloadavg(), "threads": torch.get_num_threads(), "budget": args.budget,
               "device": args.device,
               "rounds": args.rounds, "by_sessions": {}}
    for n in args.sessions:
        reqs = requests(n, args.budget)
        runs = {"library": [], "unbatched": [], "batched": [], "limit": []}
        cpu_runs = {"library": [], "unbatched": [], "batched": [], "limit": []}
        intervals = {"library": [], "unbatched": [], "batched": []}
        distance = {"latent": 0.0, "pixel": 0, "differing_pixels": []}
        calls = None
        for r in range(args.rounds):
            wall, cpu, ints, lib_finals, nfe = library_round(pipe, reqs)
            runs["library"].append(nfe / wall)
            cpu_runs["library"].append(nfe / cpu)
            intervals["library"] += ints
            for mode in ("unbatched", "batched"):
                wall, cpu, ints, finals, nfe, made = studio_round(pipe, reqs, mode == "batched")
                runs[mode].append(nfe / wall)
                cpu_runs[mode].append(nfe / cpu)
                intervals[mode] += ints
                if mode == "batched":
                    calls = made
                    for (lat, pix), (lat0, pix0) in zip(finals, lib_finals):
                        distance["latent"] = max(distance["latent"], float((lat - lat0).abs().max()))
                        diff = np.abs(pix.astype(int) - pix0.astype(int))
                        distance["pixel"] = max(distance["pixel"], int(diff.max()))
                        distance["differing_pixels"].append(float((diff > 0).mean()))
                else:
                    mismatch = sum(not np.array_equal(p, p0) for (_, p), (_, p0) in zip(finals, lib_finals))
                    assert mismatch == 0, "unbatched frames must equal the library's"
            limit_wall, limit_cpu = network_limit(pipe, n)
            runs["limit"].append(limit_wall)
            cpu_runs["limit"].append(limit_cpu)
            print(f"  {n} sessions, round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()),
                  flush=True)
        entry = {k: statistics.median(v) for k, v in runs.items()}
        entry.update({f"{k}_cpu": statistics.median(v) for k, v in cpu_runs.items()})
        entry.update({f"{k}_rounds": v for k, v in runs.items()})
        entry.update({f"{k}_cpu_rounds": v for k, v in cpu_runs.items()})
        entry["batched_vs_limit_per_round"] = statistics.median(b / lim for b, lim in zip(runs["batched"], runs["limit"]))
        entry["batched_vs_limit_cpu_per_round"] = statistics.median(
            b / lim for b, lim in zip(cpu_runs["batched"], cpu_runs["limit"]))
        entry.update({f"{k}_p50": statistics.median(v) for k, v in intervals.items()})
        entry.update({f"{k}_p95": percentile(v, 95) for k, v in intervals.items()})
        entry.update({"frames": len(intervals["batched"]), "batched_calls_per_round": calls,
                      "batched_vs_limit": entry["batched"] / entry["limit"],
                      "batched_vs_limit_cpu": entry["batched_cpu"] / entry["limit_cpu"],
                      "batched_vs_unbatched": entry["batched"] / entry["unbatched"],
                      "max_latent_diff": distance["latent"], "max_pixel_diff": distance["pixel"],
                      "mean_differing_pixels": float(np.mean(distance["differing_pixels"]))})
        results["by_sessions"][str(n)] = entry
        print(json.dumps(entry, indent=1), flush=True)
    results["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("\n| sessions | library | unbatched | batched | network limit | batched / limit | per CPU s: library | "
          "unbatched | batched | limit | batched / limit | p50 / p95 per frame, library (s) | unbatched (s) | "
          "batched (s) |")
    print("|---:" * 14 + "|")
    for n, e in results["by_sessions"].items():
        print(f"| {n} | {e['library']:.1f} | {e['unbatched']:.1f} | {e['batched']:.1f} | {e['limit']:.1f} | "
              f"{100 * e['batched_vs_limit']:.0f} % | {e['library_cpu']:.1f} | {e['unbatched_cpu']:.1f} | "
              f"{e['batched_cpu']:.1f} | {e['limit_cpu']:.1f} | {100 * e['batched_vs_limit_cpu']:.0f} % | "
              f"{e['library_p50']:.2f} / {e['library_p95']:.2f} | "
              f"{e['unbatched_p50']:.2f} / {e['unbatched_p95']:.2f} | {e['batched_p50']:.2f} / {e['batched_p95']:.2f} |")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
