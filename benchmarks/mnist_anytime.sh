#!/usr/bin/env bash
# Anytime quality of the embedded MNIST model (BENCHMARKS.md §5). Every method sees the same noise
# and labels; shards are cached in $OUT, so rerunning with more --num-samples or methods only adds work.
#   bash benchmarks/mnist_anytime.sh [NUM_SAMPLES]        # 200 samples: ~95 min on 2 CPU cores
set -euo pipefail
N=${1:-200}
OUT=${OUT:-benchmarks/results/mnist-eval}
nested-diffusion evaluate --num-samples "$N" --batch-size 100 --budget 100 \
  --nested 10x10 --nested 20x5 --nested 5x20 \
  --nested 10x10:dpmpp-2m --nested 20x5:dpmpp-2m --nested 5x20:dpmpp-2m \
  --nested 6x10/10/10/20/25/25:dpmpp-2m \
  --vanilla ddim:1 --envelope dpmpp-2m:0 --metric digit-fd,accuracy --out "$OUT"
for f in results.csv results.json quality_vs_nfe.png; do cp "$OUT/$f" "$OUT/all-methods-$f"; done
# FID (InceptionV3 at 299², ~0.2 s an image on this CPU) for the headline methods, from the 8-bit
# images kept in the shards: no sampling again.
nested-diffusion evaluate --num-samples "$N" --batch-size 100 --budget 100 --checkpoints 10,20,50,100 \
  --nested 10x10 --nested 6x10/10/10/20/25/25:dpmpp-2m \
  --vanilla ddim:1 --envelope dpmpp-2m:0 --metric fid,digit-fd,accuracy --out "$OUT"
# a stochastic exact-N envelope (DDIM η = 1 with N steps), same seeds, separate folder
nested-diffusion evaluate --num-samples "$N" --batch-size 100 --budget 100 --checkpoints 10,20,50,100 \
  --no-nested --no-vanilla --envelope ddim:1 --metric fid,digit-fd,accuracy --out "$OUT-envelope-ddim"
