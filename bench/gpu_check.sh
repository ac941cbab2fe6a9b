#!/usr/bin/env bash
# The GPU check: one short prepared script for a lent GPU machine.
#   bash bench/gpu_check.sh OUTDIR [speed|all|small|accuracy]   (python3 with CUDA torch; fmnist in .data/ or $SIAMDYN_DATA)
# speed (≤ 5 min on one H200; also part of all): CIFAR-10-shaped data (50 000 synthetic 3x32x32),
#    width-64 ResNet-18, batch 1024, 10 warm-up + 100 timed steps: the no-flag default *with* its
#    probes (every 50 steps: two in the window) and per-step metrics, against the typical loop in
#    fp32 and bf16, probes off, metrics every 10 steps, and the default with compile=on; then
#    bench/instrument_cost.py: each instrument's cost in training steps and the real loop's host
#    reads and CUDA syncs per step (torch.cuda.set_sync_debug_mode).
# small (in all): batch 256, width 64 and width 16 (fmnist), typical vs siamdyn, fp32/bf16/log10.
# accuracy (in all): fmnist-small, 2 epochs, seed 0, kNN: fp32 NCHW vs channels_last vs bf16.
# SIAMDYN_GPU_CHECK_DRY=1 runs `speed` on the CPU at toy sizes (the test suite does, to keep it working).
set -u
out=${1:?usage: bash bench/gpu_check.sh OUTDIR [speed|all|small|accuracy]}
what=${2:-all}
PY=${PYTHON:-python3}
rc=0  # each part runs even if one before it failed; the exit status says whether all passed
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src SIAMDYN_DATA=${SIAMDYN_DATA:-$PWD/.data/fashion-mnist}
if [ -n "${SIAMDYN_GPU_CHECK_DRY:-}" ]; then
  # one thread: parallel views stay off (they need two), so the step and the probe take the sequential path a GPU takes
  export OMP_NUM_THREADS=1
  dev=cpu variants=typical,siamdyn-default,siamdyn
  shape="--dataset cifar-shaped --limit 2000 --width 4 --batch 32"
  speed_run="--steps 10 --warmup 0 --workers 0" cost_run="--reps 1 --warmup 1 --loop-steps 3"
else
  nvidia-smi -L
  $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
  dev=cuda variants=${SIAMDYN_GPU_VARIANTS:-typical,typical-bf16,siamdyn-default,siamdyn,siamdyn-log10,siamdyn-default-compile}
  shape="--dataset cifar-shaped --width 64 --batch 1024"
  speed_run="--steps 100 --warmup 10 --workers 12" cost_run="--reps 10 --warmup 5 --loop-steps 20"
fi
if [ "$what" = all ] || [ "$what" = speed ]; then
  $PY bench/speed.py --device $dev $shape $speed_run --variants $variants --out "$out/speed_b1024.md" || rc=1
  $PY bench/instrument_cost.py --device $dev $shape $cost_run --out "$out/instrument_cost.md" || rc=1
fi
if [ "$what" = all ] || [ "$what" = small ]; then
  $PY bench/speed.py --device cuda --dataset cifar-shaped --width 64 --batch 256 --steps 100 --warmup 10 --workers 12 \
    --variants typical,siamdyn,siamdyn-bf16,siamdyn-log10 --out "$out/speed_cuda_cifar_shaped.md" || rc=1
  $PY bench/speed.py --device cuda --width 16 --batch 256 --steps 100 --warmup 10 --workers 12 \
    --variants typical,siamdyn,siamdyn-bf16,siamdyn-log10 --out "$out/speed_cuda_fmnist.md" || rc=1
fi
if [ "$what" = all ] || [ "$what" = accuracy ]; then
  $PY bench/accuracy_check.py --device cuda --variants fp32-nchw,fp32-channels-last,bf16-channels-last \
    --runs /tmp/acc --out "$out/accuracy_cuda.md" || rc=1
fi
grep -l "| failed" "$out"/*.md 2>/dev/null && rc=1  # a variant that failed inside speed.py
exit $rc
