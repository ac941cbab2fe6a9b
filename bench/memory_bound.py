"""Why the step's memory-bound operators take longer in training than in a microbenchmark.

    python bench/memory_bound.py [--threads 1] [--cycle-mb MB] [--reps 40] [--out FILE]

The profile of the default bf16 step (bench/profile_step.py) lists the residual add at 2.4 ms and
BatchNorm at 4–5 ms on the 16-channel 28×28 maps, where a loop over one pair of tensors times them
at a fraction of that. For the activations of each ResNet stage (batch 256, bf16, channels_last,
--threads intra-op threads as each parallel view has) this times the residual add and a
training-mode BatchNorm forward in three settings:

- warm: the same inputs every call, so they stay in the caches (a typical microbenchmark);
- cold: cycling through enough different inputs to fill --cycle-mb (default: twice the last-level
  cache), as a step reads activations written long before;
- outputs kept: cold inputs, and every output kept alive, so malloc must hand out memory the freed
  outputs do not cover, often pages the process has not touched before (a page fault each 4 KiB),
  as a step's new activations may. The page faults per call are counted beside each time.
Stages run smallest first, so memory an earlier stage freed rarely fits a later stage's outputs.
"""
from __future__ import annotations

import argparse
import pathlib

import torch
import torch.nn.functional as F
from _common import emit, header, median_ms

STAGES = [(128, 4), (64, 7), (32, 14), (16, 28)]  # (channels, side) of width-16 ResNet-18 on 28×28 input


def last_level_cache_mb() -> float:
    """The size in MiB of the largest CPU cache Linux reports (0 where it reports none)."""
    units = {"K": 2 ** -10, "M": 1, "G": 2 ** 10}
    sizes = [p.read_text().strip() for p in pathlib.Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size")]
    return max((int(s[:-1]) * units[s[-1]] for s in sizes if s[-1:] in units and s[:-1].isdigit()), default=0.0)


def page_faults() -> int:
    """Minor page faults of this process so far (0 where `resource` is missing)."""
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timings(op, sets: list, reps: int) -> list[tuple[float, float]]:
    """(median ms, page faults per call) of `op`: warm, cold, and with every output kept alive."""
    kept: list = []
    settings = [(op, sets[:1], reps), (op, sets, reps), (lambda s: kept.append(op(s)), sets, len(sets) - 2)]
    out = []
    for fn, inputs, n in settings:
        before = page_faults()
        ms = median_ms(fn, inputs, n)
        out.append((ms, (page_faults() - before) / (n + 2)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cycle-mb", type=float, default=0.0,
                   help="inputs cycled through in the cold settings, in MiB (0: twice the last-level cache, ≥ 256)")
    p.add_argument("--reps", type=int, default=40)
    p.add_argument("--out")
    args = p.parse_args()
    if args.reps < 1 or args.cycle_mb < 0:
        raise SystemExit(f"--reps {args.reps} --cycle-mb {args.cycle_mb}: give reps ≥ 1 and a size ≥ 0")
    torch.set_num_threads(args.threads)
    llc = last_level_cache_mb()
    cycle_mb = args.cycle_mb or max(256.0, 2 * llc)
    ops = {"residual add": lambda s: s[0] + s[1],
           "BatchNorm forward (training)": lambda s: F.batch_norm(s[0], None, None, training=True)}
    lines = [*header("Memory-bound operators: warm, cold and with their outputs kept"),
             f"- bf16, channels_last, batch 256, {args.threads} intra-op thread(s); last-level cache "
             f"{llc:.0f} MiB (as Linux reports it; shared with other machines on a VM); cold inputs cycle through "
             f"{cycle_mb:.0f} MiB; median ms of {args.reps} calls (outputs kept: one call per input set)",
             "", "| operator | channels, side | warm ms | cold ms | outputs kept ms | kept / warm "
             "| page faults per call: warm, cold, kept |", "|---|---|---|---|---|---|---|"]
    for c, side in STAGES:
        pair_mb = 2 * 256 * c * side * side * 2 / 2 ** 20
        sets = [[torch.randn(256, c, side, side).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
                 for _ in range(2)] for _ in range(max(4, round(cycle_mb / pair_mb)))]
        for name, op in ops.items():
            (warm, fw), (cold, fc), (kept, fk) = timings(op, sets, args.reps)
            lines.append(f"| {name} | {c}, {side}×{side} | {warm:.2f} | {cold:.2f} | {kept:.2f} | {kept / warm:.1f}× "
                         f"| {fw:.0f}, {fc:.0f}, {fk:.0f} |")
        del sets
    emit(lines, args.out)


if __name__ == "__main__":
    main()
