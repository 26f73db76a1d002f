"""The cache of an evaluation's work units: one safetensors file per (method × batch of samples).

``OUT/shards/<method>/<first>-<last>.safetensors`` (the unit's sample indices) holds a unit's per-sample features at every checkpoint
(``"<nfe>|<metric>"``), its 8-bit images for small models (``"<nfe>|pixels"``) or a grid's images
(``"<nfe>|grid"``), and in its metadata the unit's key and sampling seconds. The key hashes
everything that changes the samples — the target's description (model fingerprint, dtype, guidance,
prompts, size), the method, the seed and the unit's sample indices (each sample's noise depends on
the seed and its index alone, so the batch number is not part of it) — so a stale shard is never
reused, and a truncated or foreign file is simply recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ._files import replacing
from .methods import Method

__all__ = ["ShardStore"]

#: bump when the content of shards changes meaning (3: per-sample generators, issue 19)
VERSION = 3


class ShardStore:
    """Load and save the work units of one evaluation folder."""

    def __init__(self, out_dir: str | Path, target: Any, seed: int) -> None:
        self.folder = Path(out_dir) / "shards"
        self.target_description, self.seed = target.describe(), seed

    def key(self, method: Method, rows: range) -> str:
        payload = {"target": self.target_description, "method": method.to_dict(), "seed": self.seed,
                   "start": rows.start, "stop": rows.stop, "version": VERSION}
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def path(self, method: Method, rows: range) -> Path:
        return self.folder / method.name / f"{rows.start:07d}-{rows.stop - 1:07d}.safetensors"

    def load(self, method: Method, rows: range) -> tuple[dict[str, np.ndarray], float] | None:
        """``(tensors, seconds)`` of a finished unit, or ``None`` when it must be computed."""
        path = self.path(method, rows)
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), "np") as f:
                meta = f.metadata() or {}
                if meta.get("key") != self.key(method, rows):
                    return None
                return {k: f.get_tensor(k) for k in f.keys()}, float(meta.get("seconds", 0.0))
        except Exception:  # a truncated or foreign file: recompute it
            return None

    def save(self, method: Method, rows: range, tensors: dict[str, np.ndarray], seconds: float) -> None:
        """Write a unit atomically (a killed run never leaves a half-written shard)."""
        from safetensors.numpy import save_file

        with replacing(self.path(method, rows)) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                      metadata={"key": self.key(method, rows), "seconds": repr(seconds)})
