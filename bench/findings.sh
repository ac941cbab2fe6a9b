#!/usr/bin/env bash
# Findings v3 from scratch (or resumed: finished runs are skipped), one command for every column of
# docs/findings.md but the GPU's (bench/questions.sh's three scales included, last):
#   bash bench/findings.sh [OUT=runs/findings-v3] [DOCS=docs] [RECORDS=bench/results/findings-v3]
# Per scale (docs/protocol.md): two `siamdyn experiment` workers share the scale's folder, one per
# core at one thread each (fp32 kernels slow 3-4x when two threads share a core); each scale's finished
# runs' records are copied into RECORDS/<scale> (bench/copy_records.sh), and `siamdyn report` reads every
# scale folder under RECORDS, the open questions' (bench/questions.sh) and the GPU column (untar
# bench/gpu_findings.sh's archive there) included, as docs/findings.md does. STAGE=report: the copy and
# the report alone. SCALES narrows the work (GRID:BUDGET, space-separated). Cost: docs/protocol.md.
set -eu
out=${1:-runs/findings-v3}
docs=${2:-docs}
records=${3:-bench/results/findings-v3}
SIAMDYN=${SIAMDYN:-siamdyn}
cores=$(nproc)
mkdir -p "$out"
scales=${SCALES:-core:w4 core:sgd all:standard core:w16 long:w4-long}
for spec in $scales; do
  grid=${spec%%:*} budget=${spec##*:}
  if [ "${STAGE:-all}" != report ]; then
    pids=()
    for ((i = 0; i < (cores < 2 ? 1 : 2); i++)); do
      OMP_NUM_THREADS=1 taskset -c $((i % cores)) $SIAMDYN experiment "$grid" --budget "$budget" \
        --out "$out/$budget" --no-progress > "$out.$budget.worker$i.log" 2>&1 &
      pids+=($!)
    done
    # a worker killed by hand (to reorder the work) must not cost the other's copy and the report
    for p in "${pids[@]}"; do wait "$p" || echo "findings: worker $p ended with status $?" >&2; done
    echo "findings: scale $budget done ($(find "$out/$budget" -name summary.json | wc -l) runs)"
  fi
  if [ -d "$out/$budget" ]; then bash "$(dirname "$0")/copy_records.sh" "$out/$budget" "$records/$budget"; fi
done
# the open questions' three scales are columns of the same matrix: a full regeneration (SCALES unset) runs
# them too, through bench/questions.sh (its report is the last step); QUESTIONS=0 leaves them out
if [ -z "${SCALES:-}" ] && [ "${QUESTIONS:-1}" = 1 ]; then
  exec bash "$(dirname "$0")/questions.sh" "$(dirname "$out")/questions" "$records" "$docs"
fi
$SIAMDYN report "$records" --out "$docs"
