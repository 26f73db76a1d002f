"""The evaluation loop: (method × batch) work units, cached as shards, optionally spread over
processes, scored on the main process.

Every sample has its own CPU generator, seeded from ``(seed, sample index)`` alone
(:func:`sample_seed`, as EDM's ``generate.py`` seeds one generator per image): its initial noise and
every random draw of its run come from it (samplers draw row i from generator i), so a sample is the
same whatever the batch size, the number of processes or a resumption — and the same for every
method (and for each of the envelope's runs). Samples are cut into fixed batches
``[b·B, (b+1)·B)``, the work units; a unit's per-sample features at every checkpoint are written to
``OUT/shards/<method>/<first>-<last>.safetensors`` as soon as it finishes, so a killed run resumes
where it stopped. Image metrics see the 8-bit images a user would save; for
small images (≤ 64×64×3) those are kept in the shard, so a metric added later is computed from
them without sampling again. Units are dealt round-robin to the processes of an
``accelerate launch`` (or ``torchrun``) job and their features gathered on the main process, so
the merged result equals a one-process run bit for bit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .backends import MetricBackend, default_cache_dir
from .methods import Method, frame_at
from .shards import ShardStore
from .targets import check_sampler

__all__ = ["EvalConfig", "Result", "evaluate", "check_methods", "sample_seed", "sample_generators",
           "DistributedContext"]

#: images up to this many values are kept in the shards (digits, CIFAR-size, the GMM's 8×8)
KEEP_PIXELS = 64 * 64 * 3

_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """SplitMix64's finaliser (Steele et al. 2014): a bijection of 64-bit integers that spreads nearby seeds."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index``'s generator in a run with ``seed``: ``(mix(seed) + index) mod 2³²``.

    torch's CPU generator (MT19937) keys on the low 32 bits of a seed, so the seeds live in 32 bits:
    a run's samples get distinct consecutive seeds from an offset that depends on ``seed`` alone."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"a sample index is a non-negative integer, got {index!r}")
    return (_mix64(seed & _MASK64) + index) & 0xFFFFFFFF


def sample_generators(seed: int, rows: range) -> list[torch.Generator]:
    """One CPU generator per sample of ``rows``, each seeded by :func:`sample_seed`."""
    return [torch.Generator().manual_seed(sample_seed(seed, i)) for i in rows]


@dataclass(frozen=True)
class EvalConfig:
    """``checkpoints``: the NFE counts where every method is scored; ``envelope_checkpoints``: more NFE
    counts where only the envelope's exact-N runs are made (a dense envelope for NFE efficiency, which asks
    for the smallest m at which the envelope is as good as a frame)."""

    num_samples: int
    checkpoints: tuple[int, ...]
    batch_size: int = 100
    seed: int = 0
    grid_samples: int = 40
    envelope_checkpoints: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("num_samples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (Fréchet distances need a covariance), got {self.num_samples}")
        if not self.checkpoints or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.checkpoints):
            raise ValueError(f"checkpoints must be positive NFE counts, got {list(self.checkpoints)}")
        if list(self.checkpoints) != sorted(set(self.checkpoints)):
            raise ValueError(f"checkpoints must be strictly increasing, got {list(self.checkpoints)}")
        if self.grid_samples < 0:
            raise ValueError(f"grid_samples must be >= 0, got {self.grid_samples}")
        extra = self.envelope_checkpoints
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in extra) or list(extra) != sorted(set(extra)):
            raise ValueError(f"envelope_checkpoints must be strictly increasing positive NFE counts, got {list(extra)}")

    @property
    def envelope_nfes(self) -> tuple[int, ...]:
        """Where the envelope runs: the checkpoints and the envelope checkpoints."""
        return tuple(sorted(set(self.checkpoints) | set(self.envelope_checkpoints)))

    def nfes(self, method: Method) -> tuple[int, ...]:
        """The NFE counts where ``method`` is scored."""
        return self.envelope_nfes if method.kind == "envelope" else self.checkpoints

    def batches(self) -> list[range]:
        return [range(lo, min(lo + self.batch_size, self.num_samples))
                for lo in range(0, self.num_samples, self.batch_size)]


@dataclass
class Result:
    """Every point of an evaluation: ``rows`` of dicts with ``method, kind, nfe, metric, value,
    num_samples``; ``grids[method][nfe]`` uint8 ``[n, C, H, W]`` sample images; ``seconds`` of
    sampling per method (summed over processes and resumed runs)."""

    rows: list[dict[str, Any]]
    grids: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def value(self, method: str, nfe: int, metric: str) -> float:
        for row in self.rows:
            if row["method"] == method and row["nfe"] == nfe and row["metric"] == metric:
                return row["value"]
        raise KeyError((method, nfe, metric))


class DistributedContext:
    """Rank/world of an ``accelerate launch``/``torchrun`` job (one process when not launched)."""

    def __init__(self, cpu: bool = False) -> None:
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=cpu or not torch.cuda.is_available())
        self.rank = self.state.process_index if self.state else 0
        self.world = self.state.num_processes if self.state else 1
        self.device = self.state.device if self.state else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def close(self) -> None:
        """Wait for every process, then tear the process group down explicitly (a process that
        exits with a live gloo group can abort in its C++ destructors)."""
        if self.state is None:
            return
        self.state.wait_for_everyone()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        self.state = None

    def gather(self, items: list[Any]) -> list[Any]:
        if self.state is None:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8)


def _complete_from_pixels(target, metrics: Sequence[MetricBackend], rows: range, tensors: dict[str, np.ndarray],
                          missing: set[str]) -> bool:
    """Add missing image-metric features from the 8-bit images kept in a shard; False if impossible."""
    by_metric = {m.name: m for m in metrics}
    if any(getattr(by_metric[k.split("|")[1]], "needs_raw", False) or f"{k.split('|')[0]}|pixels" not in tensors
           for k in missing):
        return False  # gmm-fd and residual need the raw samples; large images are not kept
    labels, prompts = target.condition(rows)
    for k in sorted(missing):
        c, name = k.split("|")
        pixels = torch.from_numpy(tensors[f"{c}|pixels"]).float() / 255
        tensors[k] = np.asarray(by_metric[name].features(pixels, None, labels, prompts, rows))
    return True


def _compute_unit(target, method: Method, config: EvalConfig, metrics: Sequence[MetricBackend], rows: range,
                  grid_count: int, on_nfe: Callable[[int], None],
                  only: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Run one method on the samples ``rows`` and return their features (``"nfe|metric"``) and grid images
    (an envelope: its runs at ``only`` of its NFE counts, when given)."""
    labels, prompts = target.condition(rows)
    out = {}

    def record(checkpoint: int, raw: torch.Tensor) -> None:
        images = _to_uint8(target.decode(raw))  # what a user would save
        pixels = images.float() / 255
        for metric in metrics:
            out[f"{checkpoint}|{metric.name}"] = np.asarray(metric.features(pixels, raw, labels, prompts, rows))
        if images[0].numel() <= KEEP_PIXELS:
            out[f"{checkpoint}|pixels"] = images.numpy()
        elif grid_count:
            out[f"{checkpoint}|grid"] = images[:grid_count].numpy()

    generator = lambda: sample_generators(config.seed, rows)  # noqa: E731  (fresh for every run)
    with torch.inference_mode():
        if method.kind == "envelope":
            for c in (config.envelope_nfes if only is None else only):
                last = None
                for nfe, raw in target.frames(method, rows, labels, prompts, generator(), steps=c):
                    on_nfe(1)
                    last = raw
                record(c, last)
            return out
        nfes = method.frame_nfes(target.schedule)
        wanted: dict[int, list[int]] = {}
        for c in config.checkpoints:
            index = frame_at(nfes, c)
            if index is not None:
                wanted.setdefault(index, []).append(c)
        if not wanted:
            return out
        spent = 0
        for index, (nfe, raw) in enumerate(target.frames(method, rows, labels, prompts, generator())):
            on_nfe(nfe - spent)
            spent = nfe
            for c in wanted.get(index, []):
                record(c, raw)
            if index >= max(wanted):
                break
    return out


def check_methods(target, methods: Sequence[Method], config: EvalConfig) -> None:
    """Methods must be distinct, use DDRM exactly when the target is a restoration task, and their
    step counts fit the model's training timesteps."""
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"methods must be distinct, got {names}")
    T = target.schedule.max_steps  # None: a continuous schedule takes any step count
    if T is not None and any(m.kind == "envelope" for m in methods) and config.envelope_nfes[-1] > T:
        raise ValueError(f"an envelope runs N steps per checkpoint: checkpoints must be <= {T} "
                         f"(the training timesteps), got {config.envelope_nfes[-1]}")
    restoration = hasattr(target, "measurement")
    for method in methods:
        check_sampler(method, restoration)
        steps = method.inner_steps + (method.outer_steps,) if method.kind == "nested" else (method.steps,)
        if T is not None and max(steps) > T:
            raise ValueError(f"{method.name}: step counts must be <= {T} (the model's training timesteps)")
        if method.kind == "nested" and method.outer_timesteps:
            target.schedule.check_times(method.outer_timesteps, f"{method.name}: outer times")
        method.on(target.schedule)  # a grid (~GRID) the schedule has


def evaluate(target, methods: Sequence[Method], metrics: Sequence[MetricBackend], config: EvalConfig,
             out_dir: str | os.PathLike, *, device: torch.device | str | None = None,
             cache_dir: str | os.PathLike | None = None, progress: bool = False,
             context: DistributedContext | None = None, on_ready: Callable[[], None] | None = None) -> Result | None:
    """Anytime curves of ``methods`` on ``target`` at ``config.checkpoints``, scored by ``metrics``.

    The value at checkpoint N is the metric of the image a user holds after N NFEs: the last
    frame with nfe <= N (no row if a method has no frame yet), or for an envelope the final image
    of a separate N-step run. ``on_ready`` is called once the metrics are set up, before any shard
    is written. Returns the :class:`Result` on the main process, ``None`` elsewhere.
    """
    context = context or DistributedContext()
    check_methods(target, methods, config)
    device = torch.device(device) if device is not None else (context.device or torch.device("cpu"))
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # reference statistics: the main process computes (and caches) them first
    for turn in ("main", "others"):
        if (turn == "main") == context.is_main:
            for metric in metrics:
                metric.setup(target, device, cache_dir)
        context.barrier()
    if on_ready is not None:
        on_ready()

    store = ShardStore(out_dir, target, config.seed)
    batches = config.batches()
    units = [(method, b) for b in range(len(batches)) for method in methods]
    mine = units[context.rank::context.world]
    schedule = target.schedule
    cost = {m.name: m.cost(config.nfes(m), schedule) for m in methods}  # NFEs per sample (frame_nfes: on m's grid)
    covered = {m.name: [c for c in config.nfes(m)  # the checkpoints where a method has an image
                        if m.kind == "envelope" or frame_at(m.frame_nfes(schedule), c) is not None] for m in methods}
    total = sum(cost[m.name] * len(batches[b]) for m, b in mine)
    bar = None
    if progress and context.is_main:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img·NFE", unit_scale=True, desc="evaluate", dynamic_ncols=True)
    results = []
    try:
        for method, b in mine:
            rows = batches[b]
            grid_count = min(config.grid_samples - rows.start, len(rows)) if rows.start < config.grid_samples else 0
            needed = {f"{c}|{m.name}" for c in covered[method.name] for m in metrics}
            cached = store.load(method, rows)
            if cached is not None and not needed <= set(cached[0]):
                missing = needed - set(cached[0])
                if _complete_from_pixels(target, metrics, rows, cached[0], missing):
                    store.save(method, rows, *cached)  # new metrics, same samples
                elif method.kind == "envelope":  # its exact-N runs are independent: make only the missing ones
                    start = time.perf_counter()
                    extra = _compute_unit(target, method, config, metrics, rows, grid_count, lambda k: None,
                                          only=sorted({int(k.split("|")[0]) for k in missing}))
                    cached = ({**cached[0], **extra}, cached[1] + time.perf_counter() - start)
                    store.save(method, rows, *cached)
                else:
                    cached = None
            if bar is not None:
                bar.set_postfix_str(f"{method.name} batch {b + 1}/{len(batches)}")
            if cached is not None:
                tensors, seconds = cached
                if bar is not None:
                    bar.update(cost[method.name] * len(rows))
            else:
                start = time.perf_counter()
                tensors = _compute_unit(target, method, config, metrics, rows, grid_count,
                                        (lambda k: bar.update(k * len(rows))) if bar is not None else (lambda k: None))
                seconds = time.perf_counter() - start
                store.save(method, rows, tensors, seconds)
            # only what the merge needs travels to the main process: the features and the grid's images
            sent = {k: tensors[k] for k in needed}
            for c in covered[method.name] if grid_count else ():
                images = tensors.get(f"{c}|grid", tensors.get(f"{c}|pixels"))
                if images is not None:
                    sent[f"{c}|grid"] = images[:grid_count]
            results.append((method.name, b, sent, seconds))
    finally:
        if bar is not None:
            bar.close()
    gathered = context.gather(results)
    if not context.is_main:
        return None
    return _merge(gathered, methods, metrics, config)


def _merge(units: list, methods: Sequence[Method], metrics: Sequence[MetricBackend], config: EvalConfig) -> Result:
    by_unit = {(name, b): (tensors, seconds) for name, b, tensors, seconds in units}
    n_batches = len(config.batches())
    result = Result(rows=[])
    for method in methods:
        shards = [by_unit[(method.name, b)] for b in range(n_batches)]
        result.seconds[method.name] = float(sum(s for _, s in shards))
        for c in config.nfes(method):
            grid_parts = [t[f"{c}|grid"] for t, _ in shards if f"{c}|grid" in t]
            if grid_parts:
                result.grids.setdefault(method.name, {})[c] = np.concatenate(grid_parts)
            for metric in metrics:
                k = f"{c}|{metric.name}"
                if k not in shards[0][0]:
                    continue
                features = np.concatenate([t[k] for t, _ in shards])
                result.rows.append({"method": method.name, "kind": method.kind, "nfe": c, "metric": metric.name,
                                    "value": float(metric.score(features)), "num_samples": len(features)})
    # the envelope over several exact-N samplers: the best of them at each checkpoint
    envelopes = [m for m in methods if m.kind == "envelope"]
    if len(envelopes) > 1:
        for c in config.envelope_nfes:
            for metric in metrics:
                values = [r["value"] for r in result.rows if r["kind"] == "envelope" and r["nfe"] == c
                          and r["metric"] == metric.name]
                if values:
                    if metric.ideal is not None:
                        best = min(values, key=lambda v: abs(v - metric.ideal))
                    else:
                        best = min(values) if metric.lower_is_better else max(values)
                    result.rows.append({"method": "envelope-best", "kind": "envelope", "nfe": c,
                                        "metric": metric.name, "value": best, "num_samples": config.num_samples})
    return result
