"""What each instrument costs, in training steps, on this machine (CPU or GPU).

    python bench/instrument_cost.py                                   # fmnist-small shapes, CPU
    python bench/instrument_cost.py --device cuda --dataset cifar-shaped --width 64 --batch 1024

Times, each with the device synchronised around it (so the numbers are the work, not the
queue): one training step (views, forward, backward, optimiser), the per-step collapse
metrics and their parts, the non-finite check, one gradient probe (its first call, which
pays any kernel autotuning, and later calls), the module-speed snapshot/measure, and — with
`--compile` — torch.compile's first step and its steady step. Then it runs the real
training loop for `--loop-steps` steps and counts its host syncs: on CUDA with
`torch.cuda.set_sync_debug_mode`, everywhere by counting reads of tensor values
(`.item()`, `.tolist()`, `float()`, `bool()`, `int()`).
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
import warnings
from typing import Callable

import speed
import torch
from _common import emit, header

from siamdyn.config import Config
from siamdyn.distributed import Dist
from siamdyn.probes import collapse
from siamdyn.probes.gradients import ModuleSpeeds, gradient_split
from siamdyn.probes.sync_count import count_host_reads
from siamdyn.runtime import build_session, make_views


def make_config(args: argparse.Namespace, **extra) -> Config:
    return speed.make_config(args, precision=args.precision, **extra)  # the same run as bench/speed.py's


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Seconds per call of `fn`, the device drained before and after."""
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / reps


def component_costs(args: argparse.Namespace) -> list[tuple[str, float]]:
    cfg = make_config(args)
    s = build_session(cfg, Dist())
    x = s.images[:cfg.batch_size]
    bf16 = torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    state: dict = {}

    def step() -> None:
        views, xbar = make_views(s.model, s.augment, x, s.aug_gen)
        with bf16:
            result = s.net(views, xbar)
        s.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        s.optimizer.step()
        state.update(views=views, result=result)

    for _ in range(args.warmup):
        step()
    rows = [("training step (views, forward, backward, optimiser)", timed(step, s.device, args.reps))]
    r, views = state["result"], state["views"]
    z, p, f = r.z, r.p, r.features[0]
    scalars, grams = collapse.collapse_tensors(z, p, f)
    host = [collapse.stack_scalars(scalars).cpu(), {k: g.cpu() for k, g in grams.items()}]
    rows += [("collapse metrics, one synchronous call (collapse_metrics, for own loops)",
              timed(lambda: collapse.collapse_metrics(z, p, f), s.device, args.reps)),
             ("  the loop's device part (collapse_tensors, queued)", timed(lambda: collapse.collapse_tensors(z, p, f),
                                                                          s.device, args.reps)),
             ("  the loop's host part (RankMe eigensolves on host copies)",
              timed(lambda: collapse.finish_metrics(list(scalars), *host), s.device, args.reps)),
             ("  RankMe of z (float64 eigvalsh)", timed(lambda: collapse.effective_rank(z[0]), s.device, args.reps)),
             ("  RankMe of the features", timed(lambda: collapse.effective_rank(f), s.device, args.reps)),
             ("  std of z/|z|", timed(lambda: collapse.normalized_std(z[0]), s.device, args.reps)),
             ("  uniformity", timed(lambda: collapse.uniformity(z[0]), s.device, args.reps)),
             ("  mean cosines", timed(lambda: collapse.mean_cosines(z[0], z[1]), s.device, args.reps)),
             ("finite flag of loss and gradients (stays on the device)", timed(lambda: s.model.gradient_finite(r.loss),
                                                            s.device, args.reps))]
    with bf16:
        rows.append(("gradient probe, first call", timed(lambda: gradient_split(s.model, views), s.device, 1)))
        rows.append(("gradient probe, later calls", timed(lambda: gradient_split(s.model, views), s.device,
                                                           max(1, args.reps // 4))))
    speeds = ModuleSpeeds(s.model.module_groups())
    rows.append(("module speeds (snapshot + measure)", timed(lambda: (speeds.snapshot(), speeds.measure()),
                                                            s.device, args.reps)))
    if args.compile:
        rows += compile_costs(args)
    return rows


def compile_costs(args: argparse.Namespace) -> list[tuple[str, float]]:
    cfg = make_config(args, compile="on")
    s = build_session(cfg, Dist())
    x = s.images[:cfg.batch_size]

    def step() -> None:
        views, xbar = make_views(s.model, s.augment, x, s.aug_gen)
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss = s.net(views, xbar).loss
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        s.optimizer.step()

    first = timed(step, s.device, 1)
    for _ in range(args.warmup):
        step()
    return [("torch.compile: first step (compiles)", first),
            ("torch.compile: steady step", timed(step, s.device, args.reps))]


def run_counted(args: argparse.Namespace, steps: int, **extra) -> tuple[int, collections.Counter]:
    """Host reads of tensor values and CUDA syncs (by source line) of one real run of `steps` steps."""
    from siamdyn.train import train
    cfg = make_config(args, max_steps=steps, **extra)
    cuda = args.device == "cuda"
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with count_host_reads() as reads:
                train(cfg, out, progress=False)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    return reads.count, collections.Counter(f"{os.path.relpath(w.filename)}:{w.lineno}" for w in syncs)


def loop_syncs(args: argparse.Namespace, **extra) -> tuple[float, float, str]:
    """Host reads and CUDA syncs per training step of the real loop: two runs, `loop_steps` and
    twice that many steps, differenced (what a run does once — setup, checkpoint, kNN — cancels),
    and the source lines of the syncs that the extra steps add."""
    n = args.loop_steps
    reads_a, syncs_a = run_counted(args, n, **extra)
    reads_b, syncs_b = run_counted(args, 2 * n, **extra)
    added = syncs_b - syncs_a
    return ((reads_b - reads_a) / n, (sum(syncs_b.values()) - sum(syncs_a.values())) / n,
            ", ".join(f"{k} ×{v}" for k, v in added.most_common(8)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar-shaped"])
    p.add_argument("--limit", type=int, default=0, help="train on this many images (0 = the dataset's default)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--loop-steps", type=int, default=0, help="also count host syncs over this many real steps")
    p.add_argument("--compile", action="store_true", help="also time torch.compile's first and steady step")
    p.add_argument("--out", help="write the results table (markdown) here")
    args = p.parse_args()
    rows = component_costs(args)
    step_s = rows[0][1]
    lines = [*header("What each instrument costs, in training steps", args.device),
             f"- data {args.dataset}, width {args.width}, batch {args.batch}, precision {args.precision}; "
             f"{args.warmup} warm-up steps, {args.reps} timed repetitions, device synchronised around each",
             "", "| part | ms | training steps |", "|---|---|---|"]
    lines += [f"| {name} | {1000 * sec:.2f} | {sec / step_s:.3f} |" for name, sec in rows]
    if args.loop_steps:
        # probes every 5 steps, so that the differenced steps hold probes (4 of them at --loop-steps 20)
        for label, extra in (("probes off", {"probe_every": 0}), ("probes every 5 steps", {"probe_every": 5})):
            reads, syncs, where = loop_syncs(args, **extra)
            lines.append(f"\nReal loop, {label}, {args.loop_steps} vs {2 * args.loop_steps} steps differenced: "
                         f"{reads:.2f} host reads of tensor values per step" +
                         (f", {syncs:.2f} CUDA syncs per step (set_sync_debug_mode); where: {where or 'nowhere'}"
                          if args.device == "cuda" else ""))
    emit(lines, args.out)


if __name__ == "__main__":
    main()
