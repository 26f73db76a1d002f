#!/usr/bin/env bash
# Issue 19 (BENCHMARKS.md §12): the planned default on the embedded digit model against the stronger
# envelope, scored by FID against MNIST-5k (standard InceptionV3), 1,000 samples by default.
#
# Per budget one `evaluate` run: the plan's frames and, at exactly those NFE counts, the envelope — UniPC on
# the log-SNR grid, the linear oracle's leader (§12; the digit model is linear DDPM), and DDIM η 1 (trailing),
# the network's own leader from 20 steps on (§8.4: the deterministic solvers plateau near FID 45 on this
# network). NFE efficiency between two measured counts is interpolated (log-log). --floor-noise fid=0.5: the
# spread of real-data FIDs at 1,000 samples (§8.4: 15.9-17.0), added to the efficiency's 1.2x tolerance.
# Resumable (shards per method and batch: a member added to ENVELOPES samples only itself).
#   bash benchmarks/anytime_digits.sh [NUM_SAMPLES]       # BUDGETS="20 50" (default "20 50 100")
# ENVELOPES="unipc~logsnr unipc~logsnr:0.03" adds the grid ending at σ/α = 0.03 (it lost at 2, 10 and 20
# steps on this model, §12.1).
# Cost per sample: the budget (the plan) + the sum of its frames' NFEs per envelope member, guided network
# calls — 20 + 2·32 = 84 at budget 20, 50 + 2·133 = 316 at 50, 100 + 2·285 = 670 at 100. Measured with one
# member, 1,000 samples, two threads of a 2-core CPU: budget 50 42 min (part of it beside the test suite),
# budget 100 ≈ 55 min; the FID's InceptionV3 on every frame is a good part of it.
set -euo pipefail
N=${1:-1000}
ND=${ND:-nested-diffusion}
OUT=${OUT:-benchmarks/results/b19-digits}
mkdir -p "$OUT"
declare -A FRAMES=([20]=2,10,20 [30]=3,15,30 [50]=5,15,25,38,50 [100]=10,20,30,50,75,100)
for b in ${BUDGETS:-20 50 100}; do
  $ND evaluate --num-samples "$N" --batch-size 100 --metric fid --floor-noise fid=0.5 --no-vanilla \
    $(for m in ${ENVELOPES:-unipc~logsnr ddim:1}; do echo --envelope "$m"; done) --budget "$b" --checkpoints "${FRAMES[$b]:?no frames listed for budget $b}" \
    --out "$OUT/b$b" --quiet > "$OUT/b$b.log"
done
