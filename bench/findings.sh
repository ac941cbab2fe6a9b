#!/usr/bin/env bash
# Findings v3 from scratch (or resumed: finished runs are skipped), one command:
#   bash bench/findings.sh [OUT=runs/findings-v3] [DOCS=docs]
# Per scale (docs/protocol.md): two `siamdyn experiment` workers share the scale's folder, one per
# core at one thread each (fp32 kernels slow 3-4x when two threads share a core), then
# `siamdyn report` reads every scale folder under OUT (add the GPU column by untarring
# bench/gpu_findings.sh's archive into OUT first). Cost: docs/protocol.md "Cost, measured".
set -eu
out=${1:-runs/findings-v3}
docs=${2:-docs}
SIAMDYN=${SIAMDYN:-siamdyn}
cores=$(nproc)
mkdir -p "$out"
for spec in core:w4 core:sgd all:standard core:w16 long:w4-long; do
  grid=${spec%%:*} budget=${spec##*:}
  pids=()
  for ((i = 0; i < (cores < 2 ? 1 : 2); i++)); do
    OMP_NUM_THREADS=1 taskset -c $((i % cores)) $SIAMDYN experiment "$grid" --budget "$budget" \
      --out "$out/$budget" --no-progress > "$out.$budget.worker$i.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "findings: scale $budget done ($(find "$out/$budget" -name summary.json | wc -l) runs)"
done
$SIAMDYN report "$out" --out "$docs"
