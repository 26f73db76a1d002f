#!/usr/bin/env bash
# Issue 19 (BENCHMARKS.md §12.4): the planned default on the embedded digit model at budgets 20, 50 and 100
# against the stronger envelope, scored by FID against MNIST-5k (standard InceptionV3), 1,000 samples.
#
# The envelope is UniPC on the log-SNR grid (the linear oracle's leader, §12; the digit model is linear
# DDPM) at every frame of the three plans and between them; the budgets' runs reuse its shards (a hard-linked
# copy per budget, as anytime_envelope.sh does). --floor-noise fid=0.5: the spread of real-data FIDs at 1,000
# samples (§8.4: 15.9-17.0), added to NFE efficiency's 1.2x tolerance.
#   bash benchmarks/anytime_digits.sh [NUM_SAMPLES]     # ~2 h on 2 busy CPU cores at 1,000 samples
set -euo pipefail
N=${1:-1000}
ND=${ND:-nested-diffusion}
OUT=${OUT:-benchmarks/results/b19-digits}
ENV=2,5,10,15,20,25,38,50,100
common=(--num-samples "$N" --batch-size 100 --metric fid --floor-noise fid=0.5 --no-vanilla
        --envelope unipc~logsnr --envelope-checkpoints "$ENV")
mkdir -p "$OUT"
$ND evaluate "${common[@]}" --budget 100 --checkpoints 10,20,50,100 --no-nested --out "$OUT/envelope" --quiet
for spec in 20:2,10,20 50:5,15,25,38,50 100:10,20,50,100; do
  b=${spec%%:*}; rm -rf "$OUT/b$b" && cp -al "$OUT/envelope" "$OUT/b$b"
  $ND evaluate "${common[@]}" --budget "$b" --checkpoints "${spec#*:}" --out "$OUT/b$b" > "$OUT/b$b.log"
done
