#!/usr/bin/env bash
# The GPU column of docs/findings.md, as one command for a lent GPU machine (≤ 8 min on one H200):
#   bash bench/gpu_findings.sh OUT [core|questions]
#                                         (python3 with CUDA torch; Fashion-MNIST in .data/fashion-mnist
#                                          or $SIAMDYN_DATA: carry .data when calling the device tool)
# questions: the open questions' GPU cells instead (grid Qgpu: Q3's linear predictor over 20 seeds with
# probes every 10 steps, five Q1 cells × 3 seeds, the controls), a second scale for Q1 and Q3.
# Findings v3's core conditions at width 64 on all 60 000 images, SGD, 3 seeds (the controls 5), 6 runs at once,
# steps sized by a pilot (bench/gpu_findings.py). Writes OUT/gpu_findings.tar.gz (≤ 16 MiB):
# untar it into the findings folder (bench/results/findings-v3/) and run `siamdyn report` on it.
# SIAMDYN_GPU_CHECK_DRY=1: the CPU smoke at toy sizes the test suite runs.
set -u
out=${1:?usage: bash bench/gpu_findings.sh OUT [core|questions]}
case ${2:-core} in
  core) grid=(--grid core --control-seeds 5) ;;
  questions) grid=(--grid Qgpu --bimodal-seeds 20) ;;
  *) echo "gpu_findings: unknown mode '$2'; use core or questions" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src SIAMDYN_DATA=${SIAMDYN_DATA:-$PWD/.data/fashion-mnist}
if [ -n "${SIAMDYN_GPU_CHECK_DRY:-}" ]; then
  [ "${2:-core}" = core ] && grid=(--grid core --control-seeds 3)  # one control seed beyond the cells', as on the GPU
  exec $PY bench/gpu_findings.py "$out" --dry --minutes "${SIAMDYN_DRY_MINUTES:-3}" --workers 2 --seeds 2 --pilot-steps 6 \
    "${grid[@]}"
fi
nvidia-smi -L
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$SIAMDYN_DATA/$f" ] || { echo "gpu_findings: $SIAMDYN_DATA/$f is missing; carry .data/fashion-mnist" >&2; exit 2; }
done
exec $PY bench/gpu_findings.py "$out" --minutes "${SIAMDYN_GPU_MINUTES:-8}" --workers 6 --seeds 3 "${grid[@]}"
