#!/usr/bin/env python
"""Load and soak of the studio (`nested-diffusion serve`, issue 10), with the embedded digit model.

Three parts, each against a real server process (`python -m nested_diffusion serve --port 0`):

* ``load``: 8 sessions created at once and streamed concurrently over SSE by 8 client threads.
  Time per frame = the wall-clock interval between consecutive frames of one session as its client
  receives them (the first from the session's creation), p50/p95 over every frame of every
  session. Baseline: the library alone — the same 8 ``NestedPipeline.anytime`` sessions advanced
  round-robin, one outer step at a time, by a plain loop in one thread (the server's schedule
  without HTTP), intervals measured the same way. Also the wall time until all 8 are done, and a
  check that every session's frames equal the library's (no state mixed between sessions).
  Rounds alternate baseline and server so that machine-load drift hits both.
* ``soak``: sessions created, streamed to the end, their last PNG fetched, and deleted, one after
  another; the server's resident set size (``/proc/PID/status`` VmRSS) after a warm-up and at the
  end.
* ``browser``: Start → first frame painted in Chromium (Playwright, /usr/bin/chromium): the page's
  ``performance`` marks at the Start click and at the animation frame after the first frame's
  ``<img>`` has loaded (``studio-start`` → ``studio-first-frame``), one new session per try.

    OMP_NUM_THREADS=1 python benchmarks/studio_load.py                       # all parts, defaults
    OMP_NUM_THREADS=1 python benchmarks/studio_load.py --part load --rounds 3

Results: printed as markdown and saved to benchmarks/results/studio_load.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=float), q))


class Server:
    """`nested-diffusion serve` in a subprocess, on 127.0.0.1 and a free port."""

    def __init__(self, threads: int, max_sessions: int = 16) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "nested_diffusion", "serve", "--port", "0", "--device", "cpu",
                                      "--max-sessions", str(max_sessions)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        first = lines.get(timeout=300)
        self.url = first.split(": ", 1)[1].strip().rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def close(self) -> None:
        self.proc.send_signal(2)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def stream_frames(url: str, start: float) -> list[tuple[float, dict]]:
    """(arrival time - start, frame data) of every frame event until the server closes the stream."""
    out = []
    with httpx.Client(timeout=300) as http, http.stream("GET", url) as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "frame":
                out.append((time.perf_counter() - start, json.loads(line[6:])))
    return out


def request(k: int, budget: int) -> dict:
    return {"class_labels": [k % 10], "budget": budget, "seed": 1000 + k}


def library_round(pipe, n: int, budget: int):
    """The same sessions, round-robin in one thread: per-frame intervals, total seconds, final images."""
    import torch

    sessions = [pipe.anytime(class_labels=[k % 10], budget=budget, generator=torch.Generator().manual_seed(1000 + k))
                for k in range(n)]
    start = time.perf_counter()
    last = [start] * n
    intervals, finals = [], [None] * n
    while not all(s.done for s in sessions):
        for k, s in enumerate(sessions):
            if s.done:
                continue
            frame = s.step()
            now = time.perf_counter()
            intervals.append(now - last[k])
            last[k] = now
            finals[k] = np.asarray(frame.images[0])
    return intervals, time.perf_counter() - start, finals


def server_round(server: Server, n: int, budget: int):
    results = [None] * n
    start = time.perf_counter()
    made = [server.http.post("/v1/sessions", json=request(k, budget)).json() for k in range(n)]

    def follow(k):
        results[k] = stream_frames(server.url + made[k]["events_url"], start)

    threads = [threading.Thread(target=follow, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = max(frames[-1][0] for frames in results)
    intervals, finals = [], []
    for frames in results:
        times = [0.0] + [t for t, _ in frames]
        intervals += [b - a for a, b in zip(times, times[1:])]
        png = server.http.get(frames[-1][1]["images"][0]).content
        finals.append(np.asarray(Image.open(io.BytesIO(png))))
    for m in made:
        server.http.delete(f"/v1/sessions/{m['session_id']}")
    return intervals, total, finals


def part_load(args) -> dict:
    import torch

    from nested_diffusion import NestedPipeline

    torch.set_num_threads(args.threads)
    pipe = NestedPipeline.from_pretrained()
    server = Server(args.threads)
    lib_int, srv_int, lib_total, srv_total, mismatches, max_diff = [], [], [], [], 0, 0
    try:
        library_round(pipe, 1, 10)  # warm-up both
        server_round(server, 1, 10)
        for r in range(args.rounds):
            i, t, lib_finals = library_round(pipe, args.sessions, args.budget)
            lib_int += i
            lib_total.append(t)
            i, t, srv_finals = server_round(server, args.sessions, args.budget)
            srv_int += i
            srv_total.append(t)
            mismatches += sum(not np.array_equal(a, b) for a, b in zip(lib_finals, srv_finals))
            max_diff = max([max_diff] + [int(np.abs(a.astype(int) - b.astype(int)).max())
                                         for a, b in zip(lib_finals, srv_finals)])
            print(f"  round {r + 1}: library {lib_total[-1]:.2f} s, server {srv_total[-1]:.2f} s", flush=True)
    finally:
        server.close()
    out = {"sessions": args.sessions, "budget": args.budget, "rounds": args.rounds, "frames": len(srv_int),
           "library": {"p50": statistics.median(lib_int), "p95": percentile(lib_int, 95),
                       "total_median": statistics.median(lib_total)},
           "server": {"p50": statistics.median(srv_int), "p95": percentile(srv_int, 95),
                      "total_median": statistics.median(srv_total)},
           "final_image_mismatches": mismatches, "final_image_max_pixel_diff": max_diff,
           "library_totals": lib_total, "server_totals": srv_total}
    out["overhead_p50"] = out["server"]["p50"] / out["library"]["p50"] - 1
    out["overhead_p95"] = out["server"]["p95"] / out["library"]["p95"] - 1
    out["overhead_total"] = out["server"]["total_median"] / out["library"]["total_median"] - 1
    return out


def part_soak(args) -> dict:
    server = Server(args.threads)
    samples = []
    try:
        def one(k):
            made = server.http.post("/v1/sessions", json=request(k, args.soak_budget)).json()
            frames = stream_frames(server.url + made["events_url"], time.perf_counter())
            assert server.http.get(frames[-1][1]["images"][0]).status_code == 200
            assert server.http.delete(f"/v1/sessions/{made['session_id']}").status_code == 204

        for k in range(args.warmup):
            one(k)
        base = server.rss_mib()
        samples.append((0, base))
        start = time.perf_counter()
        for k in range(1, args.soak + 1):
            one(args.warmup + k)
            if k % 20 == 0:
                samples.append((k, server.rss_mib()))
                print(f"  {k} sessions: RSS {samples[-1][1]:.1f} MiB", flush=True)
        seconds = time.perf_counter() - start
        assert server.http.get("/v1/health").json()["sessions"] == 0
    finally:
        server.close()
    return {"sessions": args.soak, "budget": args.soak_budget, "warmup": args.warmup, "rss_mib": samples,
            "growth": samples[-1][1] / base - 1, "seconds": seconds}


def part_browser(args) -> dict:
    from playwright.sync_api import sync_playwright

    server = Server(args.threads)
    times = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector("body[data-ready=true]")
            page.get_by_test_id("budget").fill(str(args.budget))
            for k in range(args.browser + 1):
                page.get_by_test_id("seed").fill(str(k))
                page.get_by_test_id("start").click()
                page.wait_for_function("() => performance.getEntriesByName('studio-first-frame').length > 0",
                                       timeout=60_000)
                ms = page.evaluate("performance.measure('first', 'studio-start', 'studio-first-frame').duration")
                if k:  # the first try warms the browser and the server up
                    times.append(ms / 1000)
                page.wait_for_function("() => document.querySelector('[data-branch=b0] [data-testid=status]')"
                                       "?.textContent === 'done'", timeout=120_000)
                page.get_by_test_id("close").click()
            browser.close()
    finally:
        server.close()
    return {"tries": len(times), "budget": args.budget, "median": statistics.median(times),
            "p95": percentile(times, 95), "min": min(times), "max": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["load", "soak", "browser", "all"], default="all")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")),
                        help="torch threads of the server and of the library baseline")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--budget", type=int, default=100, help="NFEs per session (load and browser)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--soak", type=int, default=200)
    parser.add_argument("--soak-budget", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--browser", type=int, default=15, help="Start → first frame tries (after one warm-up)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "studio_load.json")
    args = parser.parse_args()
    results = {"loadavg_start": os.getloadavg(), "threads": args.threads, "cpus": os.cpu_count()}
    for part, fn in (("load", part_load), ("soak", part_soak), ("browser", part_browser)):
        if args.part in (part, "all"):
            print(f"{part}…", flush=True)
            results[part] = fn(args)
            print(json.dumps(results[part], indent=1), flush=True)
    results["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.write_text(json.dumps({**previous, **results}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
