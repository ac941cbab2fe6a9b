#!/usr/bin/env bash
# Issue 2's measurement: baseline numbers, then 5 epochs of simsiam and of byol on
# fmnist-small (docs/design.md §5 defaults), kNN after every epoch. Writes runs/ and a log.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/siamdyn
$S baseline --out bench/results/baseline_fmnist.json
for p in simsiam byol; do
  $S train --preset "$p" --epochs 5 --out "runs/fmnist5_$p" --overwrite --no-progress
done
