"""How the two cores are used: one forward + backward of both views, three ways, in one process.

    python bench/parallel_views.py                      # bf16 if the CPU has the units, width 16, batch 256
    python bench/parallel_views.py --precision fp32 --pairs 20

  sequential, 1 thread   the views one after the other on one core (the per-core work of a step)
  sequential, all        one after the other, every op split over all threads (parallel_views=off)
  parallel views         each view on a thread of its own, with half the threads (the default on CPUs)

The three settings take turns, one step each per round, so a slow spell of a shared VM lands on all
of them alike; the table holds each setting's median and the ratios per round. "Scaling" is the
1-thread step over the setting's step: 2.0 on two cores means both cores are fully used. The timed
conv kernels (models/conv.py) are measured per thread count, so the 1-thread settings share theirs.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from _common import emit, header

from siamdyn.config import Config
from siamdyn.hardware import choose_precision
from siamdyn.methods import SiameseMethod
from siamdyn.methods import parallel_views as pv
from siamdyn.runtime import load_data


def setup(args: argparse.Namespace) -> tuple[SiameseMethod, list[torch.Tensor]]:
    cfg = Config.from_preset("simsiam", {"backbone_width": args.width, "batch_size": args.batch,
                                         "precision": args.precision, "channels_last": "on"})
    torch.manual_seed(0)
    train_set, _ = load_data(cfg)
    x = train_set.images[:args.batch].float().div(255)
    views = [(x + 0.1 * torch.randn_like(x)).contiguous(memory_format=torch.channels_last) for _ in range(2)]
    return SiameseMethod(cfg, train_set.shape[0]).to(memory_format=torch.channels_last), views


def settings(model: SiameseMethod, views: list[torch.Tensor], threads: int, bf16: bool) -> dict[str, Callable]:
    """Each setting's step as train.py runs it: the forward under autocast, the backward after it."""
    pool = pv.view_threads(2, max(1, threads // 2))

    def sequential(n: int) -> Callable[[], None]:
        def step() -> None:
            torch.set_num_threads(n)
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(views).loss
            loss.backward()
            torch.set_num_threads(threads)
        return step

    def parallel() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the threads take it over
            pv.forward_backward(model, views, None, pool)
    return {"sequential, 1 thread": sequential(1), f"sequential, {threads} threads": sequential(threads),
            "parallel views": parallel}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--pairs", type=int, default=30, help="timed rounds (after 5 untimed ones)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.precision == "auto":
        args.precision = choose_precision(torch.device("cpu")).precision
    threads = torch.get_num_threads()
    model, views = setup(args)
    runs = settings(model, views, threads, args.precision == "bf16")
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.pairs + 5):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            if r >= 5:
                times[name].append(time.perf_counter() - start)
    one = times["sequential, 1 thread"]
    lines = header("Parallel views: forward + backward of both views, three ways")
    lines += [f"- fashion-mnist images, width {args.width}, batch {args.batch} (two views), {args.precision}, "
              f"channels_last, {threads} threads; {args.pairs} timed rounds, the settings taking turns", "",
              "| setting | median ms | scaling (1-thread step / this, per round) |", "|---|---|---|"]
    for name, ts in times.items():
        scaling = statistics.median(a / b for a, b in zip(one, ts))
        lines.append(f"| {name} | {1000 * statistics.median(ts):.1f} | {scaling:.2f}× |")
    seq = times[f"sequential, {threads} threads"]
    ratio = [a / b for a, b in zip(seq, times["parallel views"])]
    q = statistics.quantiles(ratio, n=4)
    lines += ["", f"- **parallel views vs sequential: {statistics.median(ratio):.2f}×** per round (quartiles "
              f"{q[0]:.2f}–{q[2]:.2f}×)"]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
