#!/usr/bin/env bash
# Restoration on the flow oracle (BENCHMARKS.md §9.2): the nested DDRM default against DDRM's x̂0 previews and
# the exact-N DDRM envelope, 2,000 restorations of one measurement per case, exact FD to the posterior.
#   bash benchmarks/restore_flow.sh            # ~5-8 min per run on this 2-core machine, six runs
set -euo pipefail
ND=${ND:-nested-diffusion}
OUT=${OUT:-benchmarks/results}
for model in gmm:flow gmm:flow:3; do
  for task in inpaint-random sr2 dense; do
    $ND evaluate --model "$model" --task "$task" --num-samples 2000 --batch-size 500 --budget 100 \
      --envelope ddrm:0.85 --envelope ddrm:1 --out "$OUT/restore2-$model-$task-n2000" --quiet
  done
done
