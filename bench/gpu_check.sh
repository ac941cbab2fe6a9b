#!/usr/bin/env bash
# The GPU check of issue 6, item 5: one short prepared script for a lent GPU machine.
#   bash bench/gpu_check.sh OUTDIR [all|speed|accuracy]   (python3 with CUDA torch; fmnist in .data/ or $SIAMDYN_DATA)
# 1. CIFAR-10-shaped data (50 000 synthetic 3x32x32), full-width ResNet-18 (width 64), batch 256:
#    typical loop vs siamdyn, fp32 / bf16 autocast / collapse metrics every 10 steps (the first
#    run, bench/results/speed_cuda_h200_run1.md, also had NCHW and bf16 + torch.compile).
#    fmnist-small (width 16) speed on the GPU, the same variants.
# 2. Accuracy does not pay for speed: fmnist-small, 2 epochs, seed 0, kNN after each epoch,
#    fp32 NCHW vs fp32 channels_last vs bf16 channels_last.
set -u
out=${1:?usage: bash bench/gpu_check.sh OUTDIR [all|speed|accuracy]}
what=${2:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src SIAMDYN_DATA=${SIAMDYN_DATA:-$PWD/.data/fashion-mnist}
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
if [ "$what" != accuracy ]; then
python3 bench/speed.py --device cuda --dataset cifar-shaped --width 64 --batch 256 --steps 100 --warmup 10 --workers 12 \
  --variants typical,siamdyn,siamdyn-bf16,siamdyn-log10 --out "$out/speed_cuda_cifar_shaped.md"
python3 bench/speed.py --device cuda --width 16 --batch 256 --steps 100 --warmup 10 --workers 12 \
  --variants typical,siamdyn,siamdyn-bf16,siamdyn-log10 --out "$out/speed_cuda_fmnist.md"
fi
[ "$what" = speed ] && exit 0
for v in "fp32-nchw precision=fp32 channels_last=off" "fp32-channels-last precision=fp32 channels_last=on" \
         "bf16-channels-last precision=bf16 channels_last=on"; do
  set -- $v
  name=$1; shift
  python3 -m siamdyn.cli train --preset simsiam --epochs 2 --out "/tmp/acc_$name" --overwrite --no-progress \
    --set device=cuda --set seed=0 $(printf -- '--set %s ' "$@") > "/tmp/acc_$name.log" 2>&1 || tail -3 "/tmp/acc_$name.log"
done
python3 - "$out/accuracy_cuda.md" <<'PY'
import json, sys
rows = ["| variant | kNN after epoch 1 (%) | after epoch 2 (%) | wall time (s) |", "|---|---|---|---|"]
for name in ("fp32-nchw", "fp32-channels-last", "bf16-channels-last"):
    try:
        s = json.load(open(f"/tmp/acc_{name}/summary.json"))
        accs = [f"{k['knn_acc']:.2f}" for k in s["knn"]]
        rows.append(f"| {name} | {' | '.join(accs)} | {s['wall_time_s']:.0f} |")
    except Exception as e:
        rows.append(f"| {name} | failed: {e} | | |")
text = "\n".join(rows) + "\n"
print(text)
open(sys.argv[1], "w").write(text)
PY
