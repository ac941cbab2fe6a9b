"""Images/s of 1 vs N training processes (torchrun + DDP) on fmnist-small, one run each.

    python bench/ddp_speed.py [--nproc 2] [--steps 30] [--out bench/results/ddp_cpu.md]
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from siamdyn.runs import read_metrics  # noqa: E402

WARMUP = 3


def timed_run(nproc: int, steps: int, sync_bn: bool) -> float:
    """Seconds per step over the steps after the warm-up, read from the run's own log."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "siamdyn", "train", "--out", out, "--no-progress", "--nproc", str(nproc),
               "--set", f"max_steps={steps + WARMUP}", "--set", "epochs=0", "--set", "probe_every=0",
               "--set", "test_limit=100", "--set", f"sync_bn={sync_bn}"]
        subprocess.run(cmd, check=True, capture_output=True)
        t = {r["step"]: r["time_s"] for r in read_metrics(out) if "time_s" in r}
    return (t[steps + WARMUP] - t[WARMUP]) / steps


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--out")
    args = p.parse_args()
    rows = [("1 process, 2 threads", timed_run(1, args.steps, True)),
            (f"{args.nproc} processes (gloo), SyncBN", timed_run(args.nproc, args.steps, True)),
            (f"{args.nproc} processes (gloo), per-rank BN", timed_run(args.nproc, args.steps, False))]
    base = rows[0][1]
    lines = [f"# DDP on CPU: 1 vs {args.nproc} processes ({datetime.date.today()})", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} cores; command: `python bench/ddp_speed.py "
             f"{' '.join(sys.argv[1:])}`",
             f"- simsiam, fmnist-small, global batch 256, width 16, {WARMUP} warm-up + {args.steps} timed steps, "
             "probes off", "",
             "| setting | s/step | images/s | vs 1 process |", "|---|---|---|---|"]
    lines += [f"| {name} | {s:.3f} | {256 / s:.0f} | {base / s:.2f}× |" for name, s in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        open(args.out, "w").write(text)


if __name__ == "__main__":
    main()
