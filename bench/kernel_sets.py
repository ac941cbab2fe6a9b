"""Does the kernel set change what a run learns? The same runs under this machine's own
kernels and under PyTorch's AVX2 kernels with oneDNN limited to AVX2, paired by seed.

    python bench/kernel_sets.py --arm fp32-nchw --seeds 0,1,...,15 \\
        --runs-native runs/layout_exact --runs-avx2 runs/layout_avx2 --out bench/results/kernel_sets_cpu_amx.md

Each run is bench/precision_parity.py's (its config and run-directory names, so runs already
there are reused; each is checked to have run on the kernel set it is filed under). The two
kernel sets start from the same weights and train on the same batches and the same augmented
views, bit for bit; they differ in rounding only. Reported per seed: the final kNN under each,
their difference, and the first steps at which the two losses differ by more than 1e-4 and
1e-2; over seeds: the mean ± std of the difference and a two-sided sign test. A run already
there is checked to have run on its kernel set: its recorded ATen capability, and its oneDNN
ISA limit where recorded (runs from before that record carry the capability only).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys

import yaml

from _common import emit, finished_summary, header
from precision_parity import ARMS, planned_run, run

from siamdyn.runs import load_run_config, read_metrics  # noqa: E402

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# Loss gaps (absolute; SimSiam's negative cosine runs from ≈ 0 at initialisation towards −1)
# at which the two runs count as parted.
DIVERGENCE = (1e-4, 1e-2)


def kernels_of(run_dir: str) -> tuple[str, str]:
    """(ATen CPU capability, oneDNN ISA limit or "") as the run recorded them in config.yaml.
    Runs older than the `kernel_env` record carry the capability only."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        versions = yaml.safe_load(f).get("versions", {})
    return versions.get("cpu_capability", "unknown"), versions.get("kernel_env", {}).get("ONEDNN_MAX_CPU_ISA", "")


def filed_under(kernels: str, args: argparse.Namespace) -> argparse.Namespace:
    """`args` as precision_parity's `run` takes them, with `runs` the kernel set's directory."""
    return argparse.Namespace(**vars(args), runs=args.runs_avx2 if kernels == "avx2" else args.runs_native)


def ensure_run(kernels: str, seed: int, args: argparse.Namespace) -> str:
    """Train the run in a child process with the kernel set's environment, unless it is done;
    refuse a run filed under the wrong kernel set."""
    _, out, done = planned_run(seed, args.arm, filed_under(kernels, args))
    if not done:
        cmd = [sys.executable, __file__, "--child", kernels, "--seeds", str(seed), "--arm", args.arm,
               "--epochs", str(args.epochs), "--limit", str(args.limit),
               "--runs-native", args.runs_native, "--runs-avx2", args.runs_avx2]
        env = {k: v for k, v in os.environ.items() if k not in AVX2_ENV}  # native: the machine's own kernels
        subprocess.run(cmd, env={**env, **(AVX2_ENV if kernels == "avx2" else {})}, check=True)
    capability, isa = kernels_of(out)
    if kernels == "native" and capability in ("AVX2", "DEFAULT", "unknown"):
        raise SystemExit(f"{out}: this machine's own kernels are {capability}, so there is no second kernel set "
                         "to compare with; run this on a machine with AVX-512")
    if (kernels == "avx2") != (capability == "AVX2") or (kernels == "native" and isa):
        raise SystemExit(f"{out} ran with capability {capability}{' and oneDNN ISA ' + isa if isa else ''}, "
                         f"not the {kernels} kernels it is filed under; move it away or pick another --runs directory")
    return out


def first_divergent_steps(a: str, b: str) -> list[int | None]:
    """For each tolerance in DIVERGENCE, the first logged step where the two runs' losses differ
    by more than it (absolute: the loss starts near 0, so a relative gap there means nothing)."""
    la, lb = ({r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r} for run in (a, b))
    gaps = [(s, abs(la[s] - lb[s])) for s in sorted(set(la) & set(lb))]
    return [next((s for s, gap in gaps if gap > tolerance), None) for tolerance in DIVERGENCE]


def sign_test(diffs: list[float]) -> float:
    """Two-sided sign test p-value (ties dropped)."""
    pos, neg = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    n = pos + neg
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(pos, neg) + 1)) / 2 ** n) if n else 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arm", default="fp32-nchw", choices=sorted(ARMS))
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7")
    p.add_argument("--runs-native", default="runs/kernel_sets/native")
    p.add_argument("--runs-avx2", default="runs/kernel_sets/avx2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=20000)
    p.add_argument("--out")
    p.add_argument("--child", choices=("native", "avx2"), help=argparse.SUPPRESS)
    args = p.parse_args()
    args.heldout_every = 10
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.child:
        run(seeds[0], args.arm, filed_under(args.child, args))
        return
    rows, knn = [], {"native": [], "avx2": []}
    for seed in seeds:
        native, avx2 = (ensure_run(k, seed, args) for k in ("native", "avx2"))
        a, b = (finished_summary(r)["final_knn_acc"] for r in (native, avx2))
        knn["native"].append(a)
        knn["avx2"].append(b)
        parted = " / ".join(map(str, first_divergent_steps(native, avx2)))
        rows.append(f"| {seed} | {a:.2f} | {b:.2f} | {a - b:+.2f} | {parted} |")
        print(rows[-1], flush=True)
    cfg = load_run_config(native)
    diffs = [a - b for a, b in zip(knn["native"], knn["avx2"])]
    emit([*header("Kernel sets: the same runs under two kernel sets, paired by seed"),
          f"- arm {args.arm} of bench/precision_parity.py: simsiam preset, width {cfg.backbone_width}, batch "
          f"{cfg.batch_size}, {args.epochs} epochs on {args.limit} training images, final weighted kNN on "
          f"all 10 000 test images; native = capability {kernels_of(native)[0]}, avx2 = "
          + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items()), "",
          "| seed | kNN native (%) | kNN avx2 (%) | native − avx2 | losses first differ by > "
          + " / ".join(f"{t:g}" for t in DIVERGENCE) + " at step |",
          "|---|---|---|---|---|", *rows, "",
          f"- native − avx2: {statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} over {len(diffs)} seeds; "
          f"native higher in {sum(d > 0 for d in diffs)} of {len(diffs)}; sign test p = {sign_test(diffs):.3f}",
          "- final kNN: " + "; ".join(f"{k} {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} (std over seeds)"
                                     for k, v in knn.items())],
         args.out)


if __name__ == "__main__":
    main()
