#!/usr/bin/env bash
# Issue 7's "done when": with the fmnist-small defaults, how long until weighted kNN first
# reaches the raw-pixel numbers (78.85 %, 85.54 %), over 3 seeds, on this machine.
#   bash bench/time_to_accuracy.sh [PRESET] [EPOCHS] [OUT]     (default: simsiam 3 bench/results/time_to_accuracy.md)
# SEEDS="1 2" trains only those seeds (the table always reads seeds 0, 1, 2); MAX_STEPS=N stops
# each run after N steps of the EPOCHS-long schedule (the same trajectory, cut short).
# Each run is a plain `siamdyn train` (python -m siamdyn: run with the venv active); kNN on the full 60 000 / 10 000 after every epoch.
set -euo pipefail
preset=${1:-simsiam}
epochs=${2:-3}
out=${3:-bench/results/time_to_accuracy.md}
for seed in ${SEEDS:-0 1 2}; do
  python -m siamdyn train --preset "$preset" --epochs "$epochs" --set seed=$seed --set max_steps=${MAX_STEPS:-0} \
    --out "runs/tta/$preset-seed$seed" \
    --overwrite --no-progress > "runs/tta-$preset-seed$seed.log" 2>&1 || { tail -3 "runs/tta-$preset-seed$seed.log"; exit 1; }
done
python - "$preset" "$epochs" "$out" <<'PY'
import datetime, json, os, platform, statistics, sys
preset, epochs, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = [json.load(open(f"runs/tta/{preset}-seed{s}/summary.json")) for s in range(3)]
ms = lambda xs: f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else (f"{xs[0]:.2f}" if xs else "—")
rows = []
for r, seed in zip(runs, range(3)):
    within = [k["knn_acc"] for k in r["knn"] if k["time_s"] <= 900]
    tta = r.get("time_to_knn", {})
    cross = {lvl: (f"{v['time_s']:.0f} s" if v else "not reached") for lvl, v in tta.items()}
    accs = " / ".join(f"{k['knn_acc']:.2f}" for k in r["knn"])
    rows.append(f"| {seed} | {accs} | "
                f"{max(within) if within else float('nan'):.2f} | {' | '.join(cross.values())} | {r['wall_time_s']:.0f} |")
levels = list(runs[0].get("time_to_knn", {}))
best15 = [max([k["knn_acc"] for k in r["knn"] if k["time_s"] <= 900] or [float("nan")]) for r in runs]
lines = [f"# Time to accuracy: `{preset}` defaults, {epochs} epochs, 3 seeds ({datetime.date.today()})", "",
         f"- machine: {platform.machine()}, {os.cpu_count()} cores; command: `bash bench/time_to_accuracy.sh {preset} {epochs}`",
         "- weighted kNN k=200 on all 60 000 / 10 000 after each epoch; times are wall time since the start of the run, kNN included",
         "", f"| seed | kNN after each epoch (%) | best within 15 min (%) | {' | '.join('first ≥ ' + l + ' %' for l in levels)} | wall s |",
         "|---" * (4 + len(levels)) + "|", *rows, "",
         f"Best kNN within 15 minutes: {ms(best15)} %."]
for lvl in levels:
    times = [r["time_to_knn"][lvl]["time_s"] for r in runs if r["time_to_knn"].get(lvl)]
    lines.append(f"Time to {lvl} %: reached by {len(times)}/3 seeds" + (f", {ms(times)} s." if times else "."))
text = "\n".join(lines) + "\n"
print(text)
open(out, "w").write(text)
PY
