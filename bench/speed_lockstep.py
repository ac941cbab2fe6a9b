"""Training speed in lockstep: the variants of bench/speed.py take turns, one training step each.

    python bench/speed_lockstep.py                                  # siamdyn-default against both typical loops
    python bench/speed_lockstep.py --variants typical-bf16,siamdyn-default --steps 200

bench/speed.py runs each variant for a window of its own, so on a shared VM whose speed drifts
(its bf16 matmul rate measured 423-1167 GFLOP/s on one day) a slow spell lands on one variant and
not another. Here every variant runs in its own process at once, but only one of them computes at
a time: the parent hands the turn round (one step each, the order rotating every round), so the
steps compared are seconds, not minutes, apart. A variant's time is the wall clock of its turns,
probes and per-step collapse metrics included (siamdyn-default's probe lands in its step every
probe_every = 50 steps, as in a user's run). The ratio is total time against total time over the
window; the spread is that ratio over blocks of `--block` consecutive rounds.
Only variants that log every step can be paced (a siamdyn step line is a step done). A window that
crosses an epoch's end puts siamdyn's epoch-end work (checkpoint, kNN where asked) in that turn, as in
a user's run. For CPUs only: a GPU's kernels and DataLoader workers run on outside their turn.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time

from _common import emit, header
from speed import VARIANTS, add_run_args, child_command


class Child:
    """One variant's process, paced over its stdin / stdout (speed.Pacer is the other half)."""

    def __init__(self, args: argparse.Namespace, variant: str) -> None:
        self.variant, self.err = variant, tempfile.TemporaryFile("w+")  # stderr to a file: a pipe could fill
        # Two steps beyond the window, so the last paced turn ends on a step line, not the run's final work.
        cmd = [*child_command(args, variant, args.steps + 2), "--lockstep"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True)

    def tick(self) -> None:
        """Wait until the child has finished a step."""
        for line in self.proc.stdout:
            if line.startswith("TICK"):
                return
        raise SystemExit(f"{self.variant} ended before its turns were over: {self.last_error()}")

    def last_error(self) -> str:
        self.err.seek(0)
        return (self.err.read().strip().splitlines() or ["no output"])[-1]

    def turn(self) -> float:
        """One step of this variant alone: seconds from its go to its next tick."""
        start = time.perf_counter()
        self.proc.stdin.write("GO\n")
        self.proc.stdin.flush()
        self.tick()
        return time.perf_counter() - start

    def finish(self) -> dict:
        """Unpaced to the end: its RESULT line (precision, layout, peak RSS)."""
        out, _ = self.proc.communicate("END\n")
        line = [x for x in out.splitlines() if x.startswith("RESULT ")]
        if self.proc.returncode or not line:
            raise SystemExit(f"{self.variant} failed after its turns: {self.last_error()}")
        return json.loads(line[0][7:])


def lockstep(args: argparse.Namespace, variants: list[str]) -> tuple[dict[str, list[float]], dict[str, dict]]:
    """Each variant's step times over the window (warm-up dropped), the turns interleaved, and its RESULT."""
    children = [Child(args, v) for v in variants]
    try:
        for c in children:  # set-up (data, model, first step) overlaps; it is warm-up
            c.tick()
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.warmup + args.steps):
            for c in children[r % len(children):] + children[:r % len(children)]:
                times[c.variant].append(c.turn())
            if (r + 1) % 25 == 0:
                print(f"round {r + 1}/{args.warmup + args.steps}", flush=True)
        results = {c.variant: c.finish() for c in children}
    finally:  # one child failed: the others must not train on, unpaced, beside whatever runs next
        for c in children:
            if c.proc.poll() is None:
                c.proc.kill()
    return {v: t[args.warmup:] for v, t in times.items()}, results


def ratio_lines(times: dict[str, list[float]], block: int) -> list[str]:
    """Each pair's ratio over the window and its spread over blocks of rounds (the slower one's time
    over the faster one's, so > 1 means `fast` is faster)."""
    lines = []
    pairs = [(f, s) for f in times if f.startswith("siamdyn") for s in times if s.startswith("typical")]
    pairs += [("typical-bf16", "typical")] if {"typical", "typical-bf16"} <= times.keys() else []
    for fast, slow in pairs:
        blocks = [sum(times[slow][i:i + block]) / sum(times[fast][i:i + block])
                  for i in range(0, len(times[fast]) - block + 1, block)]
        q = statistics.quantiles(blocks, n=4) if len(blocks) > 1 else blocks * 3
        lines.append(f"- **{fast} vs {slow}: {sum(times[slow]) / sum(times[fast]):.2f}×** over the window; "
                     f"per block of {block} rounds: median {statistics.median(blocks):.2f}×, quartiles "
                     f"{q[0]:.2f}–{q[2]:.2f}×, range {min(blocks):.2f}–{max(blocks):.2f}× ({len(blocks)} blocks)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p, "typical,typical-bf16,siamdyn-default", steps=100)
    p.add_argument("--block", type=int, default=10, help="rounds per block for the spread of the ratio")
    args = p.parse_args()
    variants = args.variants.split(",")
    for v in variants:
        if v not in VARIANTS or VARIANTS[v].get("log_every", 1) != 1:
            raise SystemExit(f"--variants: {v!r} cannot be paced; choose among "
                             f"{', '.join(k for k, o in VARIANTS.items() if o.get('log_every', 1) == 1)}")
    if args.device != "cpu" or args.workers:  # else work runs outside its turn and the ratio flatters it
        raise SystemExit("lockstep is for CPU loops without DataLoader workers (a GPU's kernels and a worker's "
                         "prefetching run on during another variant's turn); use bench/speed.py there")
    if args.steps < args.block:
        raise SystemExit(f"--steps {args.steps} is shorter than one block (--block {args.block})")
    times, results = lockstep(args, variants)
    lines = [*header("Training speed in lockstep", args.device),
             f"- data {args.dataset}, backbone width {args.width}, batch {args.batch} (two views each), "
             f"{args.warmup} warm-up + {args.steps} timed rounds, one step per variant per round; timed turns: "
             + ", ".join(f"{v} {len(t)}" for v, t in times.items()),
             "", "| variant | precision, layout | mean s/step (wall, probes in) | median s/step | slowest step s "
             "| peak RSS MB |", "|---|---|---|---|---|---|"]
    for v, t in times.items():
        r = results[v]
        lines.append(f"| {v} | {r.get('mode', '?')} | {statistics.fmean(t):.3f} | {statistics.median(t):.3f} | "
                     f"{max(t):.3f} | {r.get('peak_rss_mb', float('nan')):.0f} |")
    emit([*lines, "", *ratio_lines(times, args.block)], args.out)


if __name__ == "__main__":
    main()
