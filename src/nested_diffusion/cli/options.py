"""What every command shares: argument types, help formatting, the model options, output folders,
and how a library error names the command's flags.

Torch-free at import time (the CLI starts without loading torch or diffusers).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..defaults import DEFAULT_SIGMA_Y, RESTORATION_BOXES, RESTORATION_TASKS

__all__ = ["CLIError", "positive_int", "positive_float", "eta", "guidance", "sigma_y", "classes", "Formatter",
           "add_model_arguments", "embedded_models_help", "add_task_arguments", "resolve_device", "quiet_loading", "load_pipeline", "check_out", "staged_output", "flag_names",
           "DTYPES", "SAMPLERS"]

class _SamplerNames:
    """The sampler registry's names (:data:`nested_diffusion.samplers.SAMPLERS`) as argparse
    ``choices``, read when first needed: building the parser stays torch-free."""

    def _names(self) -> list[str]:
        from ..samplers import SAMPLERS as registry

        return list(registry)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


#: the inner samplers a command accepts: derived from the registry, never copied
SAMPLERS = _SamplerNames()
DTYPES = ("float32", "float16", "bfloat16")


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _number(kind: type, accepted: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: parse ``kind`` and accept it when ``ok(value)``; else say ``accepted``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {accepted}, got {text}")
        return value
    return parse


positive_int = _number(int, "a positive integer", lambda v: v > 0)
positive_float = _number(float, "a positive number", lambda v: v > 0 and math.isfinite(v))
eta = _number(float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
guidance = _number(float, "a number >= 0", lambda v: v >= 0 and math.isfinite(v))
sigma_y = _number(float, "a number >= 0 (noise std on the model's [-1, 1] scale)", lambda v: v >= 0 and math.isfinite(v))


def classes(text: str) -> list[int]:
    """'3', '0,4,7' or '0-9' (ranges inclusive)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ValueError
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class indices like '3', '0,4,7' or '0-9', got {text!r}") from None
    if any(c < 0 for c in out):
        raise argparse.ArgumentTypeError(f"class indices must be >= 0, got {text!r}")
    return out


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except ``None`` ones (their help text says what ``None`` means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def embedded_models_help() -> str:
    """The ``--model`` help's list of the embedded models by name (:func:`nested_diffusion.models.embedded_names`)."""
    from ..models import embedded_names

    return "; the embedded models by name: " + ", ".join(embedded_names())


def add_model_arguments(p: argparse.ArgumentParser, model_help: str) -> None:
    """``--model``, ``--device`` and ``--dtype``."""
    p.add_argument("--model", default=None, help=model_help + embedded_models_help())
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps …")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype")


def add_task_arguments(p: argparse.ArgumentParser, tasks: list[str], required: bool) -> None:
    """``--task``, ``--box``, ``--blur-sigma`` and ``--sigma-y`` (restore and evaluate)."""
    p.add_argument("--task", choices=tasks, required=required, default=None,
                   help="; ".join(f"{t}: {RESTORATION_TASKS[t]}" for t in tasks))
    p.add_argument("--box", choices=RESTORATION_BOXES, default="bottom", help="inpaint-box: the hidden half or centre")
    p.add_argument("--blur-sigma", type=positive_float, default=1.0, help="deblur: Gaussian std in pixels")
    p.add_argument("--sigma-y", type=sigma_y, default=DEFAULT_SIGMA_Y,
                   help="measurement noise std on the model's [-1, 1] scale (added to held-out digits; the noise "
                        "assumed in an --input image)")


def resolve_device(name: str):
    """``--device``: ``auto`` is CUDA when available, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: CUDA is not available on this machine")
    return device


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Diffusers' "Loading pipeline components" bar off while a command loads a model (the command
    prints its own progress)."""
    from diffusers.utils import logging as diffusers_logging

    was_enabled = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            diffusers_logging.enable_progress_bar()


def load_pipeline(args: argparse.Namespace, **kwargs: Any):
    """The ``NestedPipeline`` of ``--model/--device/--dtype``, loaded quietly (``kwargs`` go to
    ``from_pretrained``, e.g. ``use_safetensors=True``)."""
    import torch

    from ..pipelines import NestedPipeline

    device = resolve_device(args.device)
    with quiet_loading():
        return NestedPipeline.from_pretrained(args.model, dtype=getattr(torch, args.dtype), device=device, **kwargs)


def nested_frames(session: Any, *, compare: str | None = None) -> tuple[list[Any], float, Any]:
    """Run ``session`` to the end under an NFE progress bar (twice its length when a ``compare`` lane follows,
    labelled so): ``(frames, seconds, bar)``; the caller closes the bar."""
    import time

    from tqdm import tqdm

    total = session.core.total_nfe
    bar = tqdm(total=total * (2 if compare else 1), unit="NFE", desc="nested", file=sys.stderr)
    frames, start = [], time.perf_counter()
    for frame in session.frames():
        frames.append(frame)
        bar.update(frame.nfe - bar.n)
    seconds = time.perf_counter() - start
    if compare:
        bar.set_description(compare)
    return frames, seconds, bar


def check_out(out: Path, marker: str, writer: str) -> Path:
    """Refuse output paths a command must not touch: files, non-empty folders without its
    ``marker`` (written by ``writer``), missing or read-only parents. Returns the parent."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise ValueError(f"--out {str(out)!r} is a non-empty folder not written by {writer}; "
                         "choose a new or empty folder")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"--out {str(out)!r}: parent folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {str(out)!r}: parent folder {str(parent)!r} is not writable")
    return parent


@contextmanager
def staged_output(out: Path, marker: str, writer: str) -> Iterator[Path]:
    """Build a command's output in a temporary sibling folder and move it to ``out`` only when the
    block succeeds (replacing an earlier output of the same command); a failure leaves nothing."""
    tmp = check_out(out, marker, writer) / f".{out.name}.partial-{os.getpid()}"
    try:
        tmp.mkdir()
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def flag_names(message: str, flags: dict[str, str]) -> str:
    """A library error in the command's words: each argument name in ``flags`` (as a whole word)
    becomes its flag, e.g. ``inner_steps`` → ``--inner``."""
    if not flags:
        return message
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(flags, key=len, reverse=True))) + r")(?![\w-])")
    return pattern.sub(lambda m: flags[m.group(1)], message)
