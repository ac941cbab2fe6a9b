#!/usr/bin/env bash
# The seed's open questions (docs/open_questions.md), run or resumed with one command:
#   bash bench/questions.sh [OUT=runs/questions] [RECORDS=bench/results/findings-v3] [DOCS=docs]
# Two `siamdyn experiment` workers, one per core at one thread each, go through the grids, sharing each
# grid's folder, in the order the answers need them: Q1 (the eq. (10) factorial), Q3 (speed against basin, SGD), Q2 (f(x)
# against f(x̄): trains BYOL, then reads Q1's encoders), Q2 at width 8 (its second width: trains all its encoders
# there, SimSiam the only control), Q1-aug (crop
# strength), Q2 again under SGD (its second optimiser: the encoders trained there). Finished runs are
# skipped, so a cut-short session resumes where it stopped; `siamdyn experiment G --budget B --out
# OUT/B --status` says what is left. At the end (or with STAGE=report alone) the run records —
# config.yaml, metrics.jsonl, summary.json, eval.json and the folders' experiment.json and
# analysis.json, no checkpoints — are copied into RECORDS/<budget> and the report is written.
set -eu
out=${1:-runs/questions}
records=${2:-bench/results/findings-v3}
docs=${3:-docs}
SIAMDYN=${SIAMDYN:-siamdyn}
cores=$(nproc)
mkdir -p "$out"
pin() { if command -v taskset > /dev/null && taskset -c "$1" true 2> /dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
# SPECS reorders or narrows the grids (GRID:BUDGET[:GLOBS], space-separated; GLOBS as `--only`), e.g. to
# finish one answer first: SPECS="Q1-aug:q-w4:eq10-crop*,eq10-no-crop Q2:q-w4"
specs=${SPECS:-Q1:q-w4 Q3:q-sgd-w4 Q2:q-w4 Q2:q-w8 Q1-aug:q-w4 Q2:q-sgd-w4}
set -f  # the globs in SPECS are siamdyn's, not the shell's
# one spec's `siamdyn experiment` arguments, one per line: grid, --budget, budget, and --only GLOBS where given
args() {
  local grid budget globs
  IFS=: read -r grid budget globs <<< "$1"
  printf '%s\n' "$grid" --budget "$budget" ${globs:+--only "$globs"}
}
work() {  # one worker: every grid in order. Runs are locked, so workers share a grid's runs, and one that
  # finishes early moves on while the other trains the last run and the grid's analysis (Q2's)
  local i=$1 spec a
  for spec in $specs; do
    mapfile -t a < <(args "$spec"); budget=${a[2]}
    # a worker that fails says why in its log; the other grids, the copy and the report still run
    OMP_NUM_THREADS=1 pin $((i % cores)) $SIAMDYN experiment "${a[@]}" --out "$out/$budget" --no-progress \
      >> "$out/${a[0]}.$budget.worker$i.log" 2>&1 || echo "questions: a ${a[0]} worker failed; see its log" >&2
  done
}
if [ "${STAGE:-all}" != report ]; then
  pids=()
  for ((i = 0; i < (cores < 2 ? 1 : 2); i++)); do work "$i" & pids+=($!); done
  # a worker killed by hand (to reorder the work) must not cost the other's copy and report
  for p in "${pids[@]}"; do wait "$p" || echo "questions: worker $p ended with status $?" >&2; done
  for spec in $specs; do
    mapfile -t a < <(args "$spec")
    $SIAMDYN experiment "${a[@]}" --out "$out/${a[2]}" --status | tail -n 1
  done
fi
for budget in q-w4 q-w8 q-sgd-w4; do
  if [ -d "$out/$budget" ]; then bash "$(dirname "$0")/copy_records.sh" "$out/$budget" "$records/$budget"; fi
done
$SIAMDYN report "$records" --out "$docs"
