"""The GPU column of the findings: findings v3's core conditions at width 64 on all 60 000
Fashion-MNIST images with the papers' SGD recipe, several seeds as parallel processes on one
GPU, sized from a pilot to fit a wall-clock budget, archived for `siamdyn report`.

    python bench/gpu_findings.py OUT [--minutes 8] [--workers 6] [--seeds 3] [--control-seeds 5]
                                     [--grid core|Qgpu]
    (bench/gpu_findings.sh wraps it; --dry: the CPU smoke the test suite runs)

Phases: (1) a pilot — the negative control for `--pilot-steps` steps in every worker slot at
once — measures seconds per step under that load; (2) max_steps is chosen so that every run
fits the time left, (3) the workers take runs from the shared folder (controls first, seed
by seed; a run another worker holds is skipped), each stops taking new runs at the deadline,
(4) the random-init reference (baseline.json) is read on the device, and
OUT/gpu_findings.tar.gz holds it and the run records (no checkpoints) of OUT/<scale>/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time

SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, SRC)

from siamdyn.experiments.grids import BUDGETS, SGD_RECIPE  # noqa: E402

ARCHIVE_LIMIT = 16 * 2 ** 20
GPU = dict(limit=0, test_limit=0, backbone_width=64, batch_size=256, epochs=0, warmup_epochs=0.5, probe_every=0,
           knn_every=0, heldout_images=2000, log_every=10, precision="fp32", device="cuda", threads=2,
           **SGD_RECIPE)
# One thread per process: runs side by side must not oversubscribe the cores (OpenMP spins).
DRY = dict(BUDGETS["smoke"], device="cpu", threads=1, **SGD_RECIPE)


def budget_for(args: argparse.Namespace, steps: int) -> dict:
    base = DRY if args.dry else GPU
    every = max(1, steps // 24)  # ≈ 24 held-out readings per run, as the CPU scales
    # Q3's early predictors read the gradient probes: every 10 steps, as its CPU budget (q-sgd-w4)
    probes = dict(probe_every=10, probe_first=10) if getattr(args, "grid", "core") == "Qgpu" else {}
    return {**base, "max_steps": steps, "heldout_every": every, **probes}


def register(name: str, budget: dict, args: argparse.Namespace) -> None:
    """Make `name` a budget the runner knows, with this script's seeds (Q3's bimodal cell its own count)."""
    from siamdyn.experiments import grids
    BUDGETS[name] = budget
    grids.FORCED[name] = SGD_RECIPE  # BYOL's cells keep their crops and λ, not their AdamW
    grids.SEEDS[name] = {"binary": args.seeds, "ladder": args.seeds, "question": args.seeds,
                         "bimodal": args.bimodal_seeds or args.seeds, "control": args.control_seeds or args.seeds}
    grids.PROBE_EPOCHS[name] = 2 if args.dry else 10


def worker(args: argparse.Namespace) -> None:
    """One process: register the budget, then train runs of the plan until the deadline."""
    from siamdyn.experiments.runner import plan, run_cell
    with open(os.path.join(args.out, "budget.json")) as f:
        spec = json.load(f)
    register(spec["name"], spec["budget"], args)
    for cell, seed in plan([args.grid], spec["name"], None):
        if time.time() > spec["deadline"]:
            break
        run_dir, what = run_cell(cell, spec["name"], seed, spec["scale_dir"], progress=False)
        print(f"[worker {args.worker}] {run_dir}: {what}", flush=True)


def spawn(args: argparse.Namespace, n: int) -> list[subprocess.Popen]:
    cmd = [sys.executable, os.path.abspath(__file__), args.out, "--seeds", str(args.seeds), "--grid", args.grid,
           "--bimodal-seeds", str(args.bimodal_seeds or args.seeds), "--control-seeds",
           str(args.control_seeds or args.seeds)]
    cmd += ["--dry"] if args.dry else []
    return [subprocess.Popen(cmd + ["--worker", str(i)]) for i in range(n)]


def pilot(args: argparse.Namespace) -> float:
    """Seconds per step of one run while `workers` runs share the device."""
    from siamdyn.config import Config
    from siamdyn.train import train
    overrides = {**budget_for(args, args.pilot_steps), "heldout_every": 0, "seed": 0}
    cfg = Config.from_preset("simsiam", overrides)
    procs = []
    if args.workers > 1:  # the other slots: the same pilot, in parallel, so the measurement sees the load
        code = (f"import sys; sys.path.insert(0, {SRC!r}); from siamdyn.config import Config; from siamdyn.train "
                f"import train; train(Config.from_preset('simsiam', {overrides!r}), sys.argv[1], overwrite=True, "
                "progress=False)")
        procs = [subprocess.Popen([sys.executable, "-c", code, os.path.join(args.out, "pilot", f"slot{i}")])
                 for i in range(1, args.workers)]
    summary = train(cfg, os.path.join(args.out, "pilot", "slot0"), overwrite=True, progress=False)
    for p in procs:
        p.wait()
    times = [json.loads(line) for line in open(os.path.join(args.out, "pilot", "slot0", "metrics.jsonl"))]
    steps = [(r["step"], r["time_s"]) for r in times if "time_s" in r]
    (s0, t0), (s1, t1) = steps[len(steps) // 3], steps[-1]  # after the first steps' warm-up
    print(f"pilot: {(t1 - t0) / (s1 - s0):.3f} s/step with {args.workers} runs at once "
          f"({summary['wall_time_s']:.0f} s for {args.pilot_steps} steps)", flush=True)
    return (t1 - t0) / (s1 - s0)


def archive(out: str, scale_dir: str) -> str:
    path = os.path.join(out, "gpu_findings.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(scale_dir, arcname=os.path.basename(scale_dir), filter=lambda t: None if "/ckpt" in t.name else t)
    size = os.path.getsize(path)
    if size > ARCHIVE_LIMIT:
        raise SystemExit(f"gpu_findings: the archive is {size / 2 ** 20:.1f} MiB, over 16 MiB")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of the whole script")
    ap.add_argument("--workers", type=int, default=6, help="parallel runs on the one device")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--grid", default="core", choices=("core", "Qgpu"),
                    help="core: findings v3's conditions; Qgpu: the open questions' GPU cells (Q3 and five Q1 cells)")
    ap.add_argument("--bimodal-seeds", type=int, default=None, help="seeds of a bimodal cell (default --seeds)")
    ap.add_argument("--control-seeds", type=int, default=None,
                    help="seeds of each control (default --seeds; at 3 the w8 SGD controls' z bounds overlapped)")
    ap.add_argument("--pilot-steps", type=int, default=60)
    ap.add_argument("--dry", action="store_true", help="CPU smoke at toy sizes (the test suite)")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        return worker(args)
    start = time.time()
    os.makedirs(args.out, exist_ok=True)
    per_step = pilot(args)
    scale = ("gpu-w64-sgd" if args.grid == "core" else "gpu-q-w64-sgd") if not args.dry else \
        ("dry-sgd" if args.grid == "core" else "dry-q-sgd")
    register(scale, budget_for(args, 10), args)  # the plan's size, before the steps are known
    from siamdyn.experiments.runner import plan
    n_runs = len(plan([args.grid], scale, None))
    left = args.minutes * 60 - (time.time() - start) - (20 if args.dry else 105)  # baseline, archive, eval, start-up
    rounds = -(-n_runs // args.workers)
    # 15 %: held-out readings, kNN, the final probe (the pilot ran with the budget's gradient probes already)
    steps = max(10, int(left / rounds / per_step / 1.15) // 10 * 10)
    # Qgpu's runs log a probe every 10 steps: past 3 000 steps its 44 runs' records near the archive's 16 MiB
    steps = min(steps, 3000) if args.grid == "Qgpu" else steps
    steps = min(steps, 12) if args.dry else steps  # the smoke tests the pipeline, not the sizing's result
    spec = {"name": scale, "budget": budget_for(args, steps), "deadline": start + args.minutes * 60 - 60,
            "scale_dir": os.path.join(args.out, scale)}
    with open(os.path.join(args.out, "budget.json"), "w") as f:
        json.dump(spec, f, indent=2)
    print(f"gpu_findings: {n_runs} runs of {steps} steps in {rounds} rounds of {args.workers}", flush=True)
    for p in spawn(args, args.workers):
        p.wait()
    os.makedirs(spec["scale_dir"], exist_ok=True)
    session = {"grids": [args.grid], "wall_time_s": time.time() - start, "runs": {}}
    meta = {"budget": scale, "seeds": args.seeds, "sessions": [session], "gpu_budget": spec["budget"]}
    with open(os.path.join(spec["scale_dir"], "experiment.json"), "w") as f:
        json.dump(meta, f, indent=2)
    done = sum(os.path.exists(os.path.join(d, "summary.json")) for d, _, _ in os.walk(spec["scale_dir"]))
    if done:  # the random-init reference, on this device: the machine that reads the archive may have no GPU
        from siamdyn.experiments.scales import load_scale, scale_baseline
        try:
            scale_baseline(load_scale(spec["scale_dir"]))
        except Exception as e:  # noqa: BLE001 — the runs are the device time spent: archive them regardless
            print(f"gpu_findings: the random-init reference failed ({e}); `siamdyn report` computes it", flush=True)
    print(f"gpu_findings: {done}/{n_runs} runs finished in {(time.time() - start) / 60:.1f} min; "
          f"archive {archive(args.out, spec['scale_dir'])}", flush=True)
    if done < n_runs:
        sys.exit(1)


if __name__ == "__main__":
    main()
