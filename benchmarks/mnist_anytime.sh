#!/usr/bin/env bash
# Anytime quality of the embedded MNIST model (BENCHMARKS.md §8.4): the project default (`plan`),
# vanilla DDIM x̂0 previews and the stochastic exact-N envelope (DDIM η = 1), scored by FID (standard
# InceptionV3), digit-FD and accuracy against the 500 held-out digits. Every method sees the same noise
# and labels; shards are cached in $OUT, so rerunning with more samples only adds batches.
#   bash benchmarks/mnist_anytime.sh [NUM_SAMPLES]    # 1,000 samples: ~90 min on 2 quiet CPU cores
# EXTRA="--nested 6x10/10/10/20/25/25:dpmpp-2m" adds the layout before issue 12 (the old default).
set -euo pipefail
N=${1:-1000}
OUT=${OUT:-benchmarks/results/mnist-anytime}
ND=${ND:-nested-diffusion}
# shellcheck disable=SC2086
$ND evaluate --num-samples "$N" --batch-size 100 --budget 100 --checkpoints 10,20,50,100 \
  --nested plan --vanilla ddim:1 --envelope ddim:1 ${EXTRA:-} \
  --metric fid,digit-fd,accuracy --out "$OUT"
