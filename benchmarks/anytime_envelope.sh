#!/usr/bin/env bash
# Issue 19 (BENCHMARKS.md §12): the planned default at budgets 20, 30, 50 and 100 against the stronger
# envelope, 10,000 samples per point on the exact Gaussian-mixture oracle.
#
# The envelope: exact-N runs of the fixed-budget samplers that win somewhere on this schedule. Every member
# (DDIM η 0/1, DPM-Solver++ 2M/3M η 0/1 and UniPC on the trailing, Karras ρ = 7 and log-SNR grids; trailing
# on flow) was screened at 2,000 samples (benchmarks/results/explore/envscreen.json); the two or three that
# lead somewhere run here, at every checkpoint of the four budgets and between them (NFE efficiency asks for
# the smallest N at which the envelope is as good as a frame). Members ending ":0.03" run the same grid ending at
# σ/α = 0.03 (grid_end), where the plan's inner runs end: on linear and cosine that beats the table's t = 0 end at
# 10-20 steps too, so the envelope gets it (scaled-linear's t = 0 is already σ/α 0.029). One folder per schedule holds the envelope;
# each budget's run starts from a hard-linked copy of it, so only the planned default is sampled there
# (the shards are a cache keyed by target, method, seed and sample indices).
#   bash benchmarks/anytime_envelope.sh [SCHEDULE[@SAMPLES]...]   # e.g. linear cosine@2000
# SEEDS="1 2" adds, per budget, the planned default on further independent sample sets (evaluate --seed;
# nested only, OUT/<schedule>-b<budget>-s<seed>): a frame's FD varies from set to set by more than the floor's
# sd, and evaluate's per-sample seeds give every schedule the same draws, so one set's luck is shared by all.
# At 10,000 samples: ~3-5 min per envelope member and 15-60 s per budget on one thread of a busy 2-core CPU
# (cosine's three members took 10 min, each flow schedule's two 8-10 min).
set -euo pipefail
ND=${ND:-nested-diffusion}
OUT=${OUT:-benchmarks/results/b19}
mkdir -p "$OUT"
DENSE=2,3,4,5,6,8,9,10,12,15,20,22,25,30,38,50,75,100
declare -A MEMBERS=(
  [linear]="unipc~logsnr dpmpp-2m:0~logsnr unipc~logsnr:0.03 dpmpp-2m:0~logsnr:0.03"
  [cosine]="unipc unipc~logsnr dpmpp-2m:0~logsnr unipc~logsnr:0.03 dpmpp-2m:0~logsnr:0.03"
  [scaled_linear]="unipc~logsnr dpmpp-3m:1~karras"
  [flow]="unipc~trailing dpmpp-3m:0~trailing"
  [flow:3]="unipc~trailing dpmpp-3m:0~trailing"
)
schedules=("$@")
[ ${#schedules[@]} -gt 0 ] || schedules=(linear cosine scaled_linear flow flow:3)
for spec in "${schedules[@]}"; do
  s=${spec%@*}; n=10000
  [ "$spec" = "$s" ] || n=${spec#*@}
  envelopes=()
  for m in ${MEMBERS[$s]}; do envelopes+=(--envelope "$m"); done
  dir="$OUT/${s/:/}"
  [ "$n" = 10000 ] || dir="$dir-n$n"
  $ND evaluate --model "gmm:$s" --num-samples "$n" --batch-size 1000 --budget 100 \
    --envelope-checkpoints "$DENSE" --no-nested --no-vanilla "${envelopes[@]}" --out "$dir" --quiet
  for b in 20 30 50 100; do
    rm -rf "$dir-b$b" && cp -al "$dir" "$dir-b$b"
    $ND evaluate --model "gmm:$s" --num-samples "$n" --batch-size 1000 --budget "$b" \
      --envelope-checkpoints "$DENSE" --no-vanilla "${envelopes[@]}" --out "$dir-b$b" > "$dir-b$b.log"
    for seed in ${SEEDS:-}; do
      $ND evaluate --model "gmm:$s" --num-samples "$n" --batch-size 1000 --budget "$b" --seed "$seed" \
        --no-vanilla --no-envelope --out "$dir-b$b-s$seed" --quiet > /dev/null
    done
  done
done
