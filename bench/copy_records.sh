#!/usr/bin/env bash
# Copy one scale folder's run records into the committed records: bash bench/copy_records.sh SRC DST
# What is copied: config.yaml, metrics.jsonl, summary.json, eval.json of each finished run (no checkpoints),
# and the folder's experiment.json and each grid's analysis.json. Used by bench/findings.sh and
# bench/questions.sh, whose records `siamdyn report bench/results/findings-v3` reads.
set -eu
src=$1 dst=$2
[ -d "$src" ] || { echo "copy_records: no folder $src; run its scale first" >&2; exit 2; }
(cd "$src" && find . -path '*/ckpt' -prune -o -type f \( -name config.yaml -o -name metrics.jsonl \
  -o -name summary.json -o -name eval.json -o -name experiment.json -o -name analysis.json \) -print) |
while read -r f; do
  d=$(dirname "$f")
  # a run's records only once it finished (summary.json): a half-trained run would read as finished
  [ "$d" = . ] || [ -f "$src/$d/summary.json" ] || [ "$(basename "$f")" = analysis.json ] || continue
  mkdir -p "$dst/$d" && cp "$src/$f" "$dst/$d/"
done
