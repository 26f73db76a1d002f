#!/usr/bin/env python
"""Train the shipped digit classifier on the MNIST-5k training split; report held-out accuracy.

    python scripts/train_classifier.py --out src/nested_diffusion/assets/digit-classifier
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nested_diffusion.data import load_mnist5k
from nested_diffusion.models.classifier import DigitClassifier


def to_tensor(images) -> torch.Tensor:
    return torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (background is -1)."""
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    out = torch.empty_like(x)
    offs = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=gen)
    for i, (dy, dx) in enumerate(offs.tolist()):
        out[i] = padded[i, :, dy:dy + 28, dx:dx + 28]
    return out


@torch.no_grad()
def accuracy(model: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(b).argmax(1) for b in x.split(500)])
    return (pred == y).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/digit-classifier"))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    xtr, ytr = load_mnist5k("train")
    xte, yte = load_mnist5k("test")
    xtr, ytr, xte, yte = to_tensor(xtr), torch.from_numpy(ytr), to_tensor(xte), torch.from_numpy(yte)
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * (len(xtr) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    bar = tqdm(total=steps, desc="classifier")
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(len(xtr) // args.batch_size):
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
            loss = F.cross_entropy(model(random_shift(xtr[idx], gen)), ytr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
    bar.close()
    acc_train, acc_test = accuracy(model, xtr, ytr), accuracy(model, xte, yte)
    model.save_pretrained(args.out)
    (args.out / "metrics.json").write_text(json.dumps(
        {"train_accuracy": acc_train, "test_accuracy": acc_test, "test_size": len(yte),
         "epochs": args.epochs, "seed": args.seed}, indent=2))
    print(f"train accuracy {acc_train:.4f}  held-out test accuracy {acc_test:.4f} ({len(yte)} images)")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
