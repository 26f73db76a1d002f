#!/usr/bin/env bash
# Digit restoration (issue 11, BENCHMARKS.md §6.3): the 500 held-out digits, sigma_y 0.05, budget 100,
# nested DDRM vs DDRM's previews vs exact-N DDRM, through `nested-diffusion evaluate --task` (resumable).
set -e
cd "$(dirname "$0")/.."
for spec in "inpaint-box --box top" "inpaint-box --box bottom" "sr4"; do
  name=$(echo $spec | tr -d ' -' )
  OMP_NUM_THREADS=1 python -m nested_diffusion evaluate --task $spec --sigma-y 0.05 --num-samples 500 \
     --checkpoints 10,20,30,50,100 --envelope ddrm:0.85 --metric accuracy,digit-fd,residual,psnr \
     --quiet --out benchmarks/results/restore-digits-$name > benchmarks/results/restore-digits-$name.log 2>&1
done
