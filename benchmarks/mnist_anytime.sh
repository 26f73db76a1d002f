#!/usr/bin/env bash
# Anytime quality of the embedded MNIST model (BENCHMARKS.md §5.3 and §6): the project default
# (`plan`), the previous default, vanilla DDIM previews and the stochastic exact-N envelope (DDIM η = 1).
# Every method sees the same noise and labels; shards are cached in $OUT, so rerunning with more
# samples only adds batches, and the FID pass reuses the 8-bit images kept in the shards.
#   bash benchmarks/mnist_anytime.sh [NUM_SAMPLES]     # 200 samples: ~30 CPU-minutes of sampling + ~15 of FID
set -euo pipefail
N=${1:-200}
OUT=${OUT:-benchmarks/results/mnist-anytime}
ND=${ND:-nested-diffusion}
COMMON=(--num-samples "$N" --batch-size 100 --budget 100 --checkpoints 10,20,30,50,75,100
        --nested plan --nested 6x10/10/10/20/25/25:dpmpp-2m --vanilla ddim:1 --envelope ddim:1 --out "$OUT")
$ND evaluate "${COMMON[@]}" --metric digit-fd,accuracy
$ND evaluate "${COMMON[@]}" --metric fid,digit-fd,accuracy
