#!/usr/bin/env bash
# The GPU check: one short prepared script for a lent GPU machine.
#   bash bench/gpu_check.sh OUTDIR [all|speed|accuracy|large]   (python3 with CUDA torch; fmnist in .data/ or $SIAMDYN_DATA)
# 1. CIFAR-10-shaped data (50 000 synthetic 3x32x32), full-width ResNet-18 (width 64), batch 256:
#    typical loop vs siamdyn, fp32 / bf16 autocast / collapse metrics every 10 steps (the first
#    run, bench/results/speed_cuda_h200_run1.md, also had NCHW and bf16 + torch.compile).
#    fmnist-small (width 16) speed on the GPU, the same variants.
# 2. Accuracy does not pay for speed: fmnist-small, 2 epochs, seed 0, kNN after each epoch,
#    fp32 NCHW vs fp32 channels_last vs bf16 channels_last.
# 3. (`large`, also in `all`) CIFAR-shaped at batch 1024: the no-flag default (precision=auto
#    picks bf16 at compute capability >= 8) against both typical loops, fp32, bf16 + compile.
set -u
out=${1:?usage: bash bench/gpu_check.sh OUTDIR [all|speed|accuracy|large]}
what=${2:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src SIAMDYN_DATA=${SIAMDYN_DATA:-$PWD/.data/fashion-mnist}
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ "$what" = all ] || [ "$what" = large ]; then
python3 bench/speed.py --device cuda --dataset cifar-shaped --width 64 --batch 1024 --steps 50 --warmup 10 --workers 12 \
  --variants typical,typical-bf16,siamdyn-default,siamdyn-fp32,siamdyn-bf16-compile --out "$out/speed_cuda_cifar_shaped_b1024.md"
fi
[ "$what" = large ] && exit 0
if [ "$what" != accuracy ]; then
python3 bench/speed.py --device cuda --dataset cifar-shaped --width 64 --batch 256 --steps 100 --warmup 10 --workers 12 \
  --variants typical,siamdyn,siamdyn-bf16,siamdyn-log10 --out "$out/speed_cuda_cifar_shaped.md"
python3 bench/speed.py --device cuda --width 16 --batch 256 --steps 100 --warmup 10 --workers 12 \
  --variants typical,siamdyn,siamdyn-bf16,siamdyn-log10 --out "$out/speed_cuda_fmnist.md"
fi
[ "$what" = speed ] && exit 0
python3 bench/accuracy_check.py --device cuda --variants fp32-nchw,fp32-channels-last,bf16-channels-last \
  --runs /tmp/acc --out "$out/accuracy_cuda.md"
