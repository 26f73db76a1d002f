#!/usr/bin/env bash
# Anytime quality of the embedded MNIST model (BENCHMARKS.md §8): the project default (`plan`), the
# first design of issue 12 (η 0 then 0.85, restarts at σ 1.4/0.42/…), the previous default, vanilla DDIM
# previews and the stochastic exact-N envelope (DDIM η = 1). Every method sees the same noise and
# labels; shards are cached in $OUT, so rerunning with more samples only adds batches, and a metric
# added later (FID) is computed from the 8-bit images kept in the shards.
#   bash benchmarks/mnist_anytime.sh [NUM_SAMPLES]     # 200 samples: ~2.5 h on 2 busy CPU cores
set -euo pipefail
N=${1:-200}
OUT=${OUT:-benchmarks/results/mnist-anytime}
ND=${ND:-nested-diffusion}
$ND evaluate --num-samples "$N" --batch-size 100 --budget 100 --checkpoints 10,20,30,50,75,100 \
  --nested plan --nested "6x10/10/10/20/25/25:dpmpp-2m:0/0.85/0.85/0.85/0.85/0.85:renoise@999/324/122/121/116/38" \
  --nested 6x10/10/10/20/25/25:dpmpp-2m --vanilla ddim:1 --envelope ddim:1 \
  --metric fid,digit-fd,accuracy --out "$OUT"
