#!/usr/bin/env bash
# Issue 3's measurement: 200 steps of simsiam, simsiam-no-sg and simsiam with a linear
# predictor on fmnist-small (all 60k images, width 16, batch 256) at lr 0.25 (the demo's
# per-step lr), probes every 20 steps, then the overlay plots in docs/instruments/.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/siamdyn
COMMON=(--set max_steps=200 --set lr=0.25 --set probe_every=20 --overwrite --no-progress)
$S train --preset simsiam --out runs/i200/simsiam "${COMMON[@]}"
$S train --preset simsiam-no-sg --out runs/i200/simsiam-no-sg "${COMMON[@]}"
$S train --preset simsiam --set predictor=linear --out runs/i200/simsiam-linear-pred "${COMMON[@]}"
$S plot runs/i200/simsiam runs/i200/simsiam-no-sg runs/i200/simsiam-linear-pred --out docs/instruments
