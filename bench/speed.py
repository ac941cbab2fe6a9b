"""Side-by-side training speed: siamdyn's loop vs a typical SSL loop, in one run.

    python bench/speed.py [--device cuda --dataset cifar-shaped --width 64] [--variants typical,siamdyn]

Each variant runs in its own subprocess (so peak RSS is its own), after `--warmup` steps:
  typical          per-image augmentation in a torch Dataset + DataLoader, fp32, NCHW,
                   the same backbone, heads, loss and batch (what lightly / solo-learn
                   style code does)
  typical-bf16     the same loop under bf16 autocast (the best a typical user could do)
  siamdyn-default  the real `siamdyn.train.train` loop with no flags at all (precision=auto,
                   channels_last=auto, probes every 50 steps)
  siamdyn          the same loop (batched on-device augmentation, channels_last, per-step
                   collapse metrics, precision=auto), probes off
  siamdyn-fp32     probes off, precision=fp32
  siamdyn-nchw     the same with channels_last=off
  siamdyn-fp32-nchw  fp32 with channels_last=off
  siamdyn-fp32-exactbn  fp32, channels_last, exact_batchnorm=true: siamdyn's BatchNorm2d with exact
                   float32 statistics in place of PyTorch's channels_last kernel (models/batchnorm.py)
  siamdyn-bf16     probes off, bf16 autocast whatever the machine
  siamdyn-bf16-nchw  bf16 with channels_last=off (the layout rule under bf16)
  siamdyn-probes   the same with the default probe_every=50 (the probes' cost)
  siamdyn-log10    the same with the collapse metrics every 10 steps, not every step
  siamdyn-fused-views  both views in one pass of 2×batch (BN statistics pooled over views)
  siamdyn-torch-conv  probes off, conv_weight_grad=torch: oneDNN's weight gradients only (models/conv.py)
  siamdyn-sequential  probes off, parallel_views=off: the views one after the other, all threads each
  siamdyn-1thread  torch.set_num_threads(1) (the thread setting's effect)
  siamdyn-compile  the same with torch.compile (compile time is in the warm-up)
  siamdyn-bf16-compile  both
  siamdyn-default-compile  the no-flag default (probes and all) with compile=on
The siamdyn-default row is the wall-clock per step of a user's run: its window holds its
probes (one per probe_every steps) and a collapse-metric reading every step; the headline
below the table splits it into step and probes.
Images/s count images per step (each trained in two views). FLOPs per step come from
torch.utils.flop_counter.FlopCounterMode on one forward + backward; the matmul peak is
measured here with torch.mm on 1024² matrices.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import emit, header

from siamdyn.config import Config  # noqa: E402
from siamdyn.methods import SiameseMethod  # noqa: E402
from siamdyn.runs import load_run_config, read_metrics  # noqa: E402

VARIANTS = {
    "typical": {},
    "typical-bf16": {},
    "siamdyn-default": {},
    "siamdyn": {"probe_every": 0},
    "siamdyn-fp32": {"probe_every": 0, "precision": "fp32"},
    "siamdyn-nchw": {"probe_every": 0, "channels_last": "off"},
    "siamdyn-fp32-nchw": {"probe_every": 0, "precision": "fp32", "channels_last": "off"},
    "siamdyn-fp32-exactbn": {"probe_every": 0, "precision": "fp32", "exact_batchnorm": True},
    "siamdyn-bf16": {"probe_every": 0, "precision": "bf16"},
    "siamdyn-bf16-nchw": {"probe_every": 0, "precision": "bf16", "channels_last": "off"},
    "siamdyn-probes": {"probe_every": 50},
    "siamdyn-log10": {"probe_every": 0, "log_every": 10},
    "siamdyn-fused-views": {"probe_every": 0, "fuse_views": True},
    "siamdyn-torch-conv": {"probe_every": 0, "conv_weight_grad": "torch"},
    "siamdyn-sequential": {"probe_every": 0, "parallel_views": "off"},
    "siamdyn-1thread": {"probe_every": 0, "threads": 1},
    "siamdyn-compile": {"probe_every": 0, "compile": "on"},
    "siamdyn-bf16-compile": {"probe_every": 0, "precision": "bf16", "compile": "on"},
    "siamdyn-default-compile": {"compile": "on"},
}


def make_config(args: argparse.Namespace, **extra) -> Config:
    # cifar-shaped: 50 000 synthetic 3×32×32 images, CIFAR-10's train split size.
    data = {"dataset": "synthetic-rgb", "image_size": 32, "limit": 50000} if args.dataset == "cifar-shaped" else {}
    if args.limit:
        data["limit"] = args.limit
    return Config.from_preset("simsiam", {**data, "backbone_width": args.width, "batch_size": args.batch,
                                          "device": args.device, "test_limit": 100, "log_every": 1,
                                          "epochs": 0, "knn_every": 0, **extra})


# ----------------------------------------------------------------------------- the typical loop
class PerImageViews(torch.utils.data.Dataset):
    """Two views per image, made one image at a time in __getitem__ (torchvision-style
    RandomResizedCrop, flip, brightness/contrast jitter), as a typical SSL codebase does."""

    def __init__(self, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        self.images, self.mean, self.std = images, mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def view(self, img: torch.Tensor) -> torch.Tensor:
        c, h, w = img.shape
        for _ in range(10):
            area = h * w * random.uniform(0.2, 1.0)
            ratio = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                top, left = random.randint(0, h - ch), random.randint(0, w - cw)
                break
        else:
            top, left, ch, cw = 0, 0, h, w
        x = img[:, top:top + ch, left:left + cw].float().div(255)
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        if random.random() < 0.5:
            x = x.flip(-1)
        if random.random() < 0.8:
            x = (x * random.uniform(0.6, 1.4)).clamp(0, 1)
            m = x.mean()
            x = ((x - m) * random.uniform(0.6, 1.4) + m).clamp(0, 1)
        return (x - self.mean) / self.std

    def __getitem__(self, i: int):
        img = self.images[i]
        return self.view(img), self.view(img)


def run_typical(args: argparse.Namespace, bf16: bool = False, pace: "Pacer | None" = None) -> dict:
    from siamdyn.data import channel_stats
    from siamdyn.optim import build_optimizer
    from siamdyn.runtime import load_data, setup_torch
    cfg = make_config(args, channels_last="off")
    device = setup_torch(cfg)
    train_set, _ = load_data(cfg)
    mean, std = channel_stats(train_set.images)
    loader = torch.utils.data.DataLoader(PerImageViews(train_set.images, mean, std), batch_size=cfg.batch_size,
                                         shuffle=True, drop_last=True, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)
    model = SiameseMethod(cfg, train_set.shape[0]).to(device)
    optimizer = build_optimizer(model, cfg)
    times, it = [], iter(loader)
    t = time.perf_counter()
    for _ in range(args.warmup + args.steps):
        try:
            v1, v2 = next(it)
        except StopIteration:  # a new epoch
            it = iter(loader)
            v1, v2 = next(it)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model([v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - t)
        if pace:
            pace.turn(len(times))
        t = time.perf_counter()
    return {"step_s": sum(times[args.warmup:]) / args.steps}


# ----------------------------------------------------------------------------- siamdyn's loop
def run_siamdyn(args: argparse.Namespace, overrides: dict, pace: "Pacer | None" = None) -> dict:
    from siamdyn.train import train
    cfg = make_config(args, max_steps=args.warmup + args.steps, **overrides)
    with tempfile.TemporaryDirectory() as out:
        summary = train(cfg, out, progress=False, loggers=pace)
        t = {r["step"]: r["time_s"] for r in read_metrics(out) if "time_s" in r}
        timer = [r["probe_time_s"] for r in read_metrics(out) if "g1_norm" in r]  # cumulative, per probe
        ran = load_run_config(out)  # precision and layout as resolved on this machine
    layout = "NHWC" if ran.memory_format == torch.channels_last else "NCHW"
    mode = f"{ran.precision}, {layout}" + (" (exact BN)" if ran.exact_batchnorm else "")
    step_s = timed_step(t, args.warmup, args.warmup + args.steps, cfg.log_every)
    n_probes = math.ceil((args.warmup + args.steps) / cfg.probe_every) if cfg.probe_every else 0
    if not n_probes:
        return {"step_s": step_s, "mode": mode}
    # Probe k runs inside step k (0-based), between logged steps k and k + 1.
    in_window = sum(1 for k in range(args.warmup, args.warmup + args.steps) if k % cfg.probe_every == 0)
    # The run's own timer (device time on a GPU) per probe after the first: the step-0 probe runs the
    # process's first kernels and pays their autotuning.
    per_probe = ((summary["probe_time_s"] - timer[0]) / (len(timer) - 1) if len(timer) > 1
                 else summary["probe_time_s"] / n_probes)
    return {"step_s": step_s, "probe_s": per_probe, "mode": mode, "probes_in_window": in_window,
            "probe_fraction": per_probe / (cfg.probe_every * step_s + per_probe),
            "probe_steps_in_loop": probe_steps_in_loop(t, args.warmup, args.warmup + args.steps, cfg.probe_every)}


def probe_steps_in_loop(times: dict[int, float], first: int, last: int, every: int) -> float | None:
    """What a probe costs inside the real loop, in training steps: the time of the 4 logged
    steps around each probe beyond 4 median steps (4, because numbers are read a step or two
    after the GPU ran them), the median over the window's probes."""
    deltas = sorted(times[s + 1] - times[s] for s in range(first, last) if s in times and s + 1 in times)
    if not deltas:
        return None
    median = deltas[len(deltas) // 2]
    extra = sorted(times[k + 4] - times[k] - 4 * median for k in range(first, last - 3)
                   if k % every == 0 and k in times and k + 4 in times)
    return extra[len(extra) // 2] / median if extra else None


def timed_step(times: dict[int, float], first: int, last: int, log_every: int) -> float:
    """Seconds per step between the first logged step >= `first` and the last <= `last`: a
    variant that logs every N steps (siamdyn-log10) times the logged steps inside the window."""
    inside = [s for s in times if first <= s <= last]
    if len(inside) < 2:
        raise SystemExit(f"steps {first}..{last} hold fewer than two logged steps (every {log_every}th and the "
                         "last are logged); give --warmup and --steps whose window holds two of them")
    return (times[max(inside)] - times[min(inside)]) / (max(inside) - min(inside))


def step_flops(args: argparse.Namespace) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    cfg = make_config(args)
    channels = 3 if args.dataset == "cifar-shaped" else 1
    side = 32 if args.dataset == "cifar-shaped" else 28
    model = SiameseMethod(cfg, channels)
    views = [torch.randn(cfg.batch_size, channels, side, side) for _ in range(2)]
    with FlopCounterMode(display=False) as counter:
        model(views).loss.backward()
    return float(counter.get_total_flops())


def matmul_peak(device: str, dtype: torch.dtype, budget_s: float = 1.0) -> float:
    """FLOP/s of torch.mm on n×n matrices, repeated until `budget_s` has passed (n = 1024 on
    a CPU, 8192 on a GPU: a small product cannot fill a GPU)."""
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    reps, t = 0, time.perf_counter()
    while time.perf_counter() - t < budget_s:
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


class Pacer:
    """A child's half of bench/speed_lockstep.py: once per training step it says so (`TICK`) and waits
    for its next turn (`GO`); any other line, or a closed stdin, ends the pacing. A siamdyn logger too: it
    ticks on each step line (the one with `time_s`, written after the step's backward), so a turn holds
    one step's work, from the previous step's optimizer update to this step's backward."""

    def __init__(self) -> None:
        self.on = True

    def __call__(self, metrics: dict, step: int) -> None:
        if "time_s" in metrics:
            self.turn(step)

    def turn(self, step: int) -> None:
        if self.on:
            print(f"TICK {step}", flush=True)
            self.on = sys.stdin.readline().strip() == "GO"


def child(args: argparse.Namespace) -> None:
    pace = Pacer() if args.lockstep else None
    if args.child.startswith("typical"):
        result = run_typical(args, bf16=args.child == "typical-bf16", pace=pace)
        result["mode"] = ("bf16" if args.child == "typical-bf16" else "fp32") + ", NCHW"
    else:
        result = run_siamdyn(args, VARIANTS[args.child], pace)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and args.device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("RESULT " + json.dumps(result))


def add_run_args(p: argparse.ArgumentParser, variants: str, steps: int) -> None:
    """The options a variant's run takes (this script's and bench/speed_lockstep.py's)."""
    p.add_argument("--variants", default=variants)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the typical loop")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar-shaped"])
    p.add_argument("--limit", type=int, default=0, help="train on this many images (0 = the dataset's default)")
    p.add_argument("--out", help="write the results table (markdown) here")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p, "typical,typical-bf16,siamdyn-default,siamdyn,siamdyn-fp32,siamdyn-bf16", steps=20)
    p.add_argument("--rounds", type=int, default=1, help="run the variant list this many times (medians reported)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)  # paced by speed_lockstep.py
    args = p.parse_args()
    if args.child:
        return child(args)
    flops = step_flops(args)
    peaks = {name: matmul_peak(args.device, dt) for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    variants = args.variants.split(",")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):  # each round starts one variant later, so a slow spell hits each alike
        for variant in variants[r % len(variants):] + variants[:r % len(variants)]:
            runs[variant].append(run_variant(args, variant))
            print(variant, runs[variant][-1], flush=True)
    rows = {v: median_run(rs) for v, rs in runs.items()}
    base = rows.get("typical", {}).get("step_s")
    lines = [*header("Training speed, side by side", args.device),
             f"- data {args.dataset}, backbone width {args.width}, batch {args.batch} (two views each), "
             f"{args.warmup} warm-up + {args.steps} timed steps",
             f"- FLOPs per step (forward + backward, FlopCounterMode): {flops / 1e9:.1f} GFLOP "
             f"({flops / args.batch / 1e6:.0f} MFLOP per image)",
             f"- measured matmul peak ({8192 if args.device == 'cuda' else 1024}² torch.mm): "
             f"fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s",
             "", "| variant | precision, layout | s/step | images/s | vs typical | GFLOP/s | % fp32 peak | % bf16 peak "
             "| peak RSS MB | peak GPU MB | probe cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant, r in rows.items():
        if "error" in r:
            lines.append(f"| {variant} | | failed: {r['error']} | | | | | | | | |")
            continue
        gflops = flops / r["step_s"] / 1e9
        lines.append(f"| {variant} | {r['mode']} | {r['step_s']:.3f} | {args.batch / r['step_s']:.0f} | "
                     f"{base / r['step_s'] if base else float('nan'):.2f}× | {gflops:.0f} | "
                     f"{100 * gflops * 1e9 / peaks['fp32']:.0f} % | {100 * gflops * 1e9 / peaks['bf16']:.0f} % | "
                     f"{r['peak_rss_mb']:.0f} | {r.get('peak_gpu_mb', float('nan')):.0f} | " +
                     (f"{r['probe_s']:.2f} s/probe = {100 * r['probe_fraction']:.1f} % of wall" if "probe_s" in r
                      else "—") + " |")
    lines += default_speedups(rows) + per_round(runs)
    emit(lines, args.out)


def child_command(args: argparse.Namespace, variant: str, steps: int) -> list[str]:
    """The command that runs one variant in its own process."""
    return [sys.executable, __file__, "--child", variant, "--steps", str(steps), "--warmup", str(args.warmup),
            "--limit", str(args.limit), "--batch", str(args.batch), "--width", str(args.width),
            "--workers", str(args.workers), "--device", args.device, "--dataset", args.dataset]


def run_variant(args: argparse.Namespace, variant: str) -> dict:
    """One variant in its own process (its own peak RSS): its RESULT line, or the error it ended with."""
    done = subprocess.run(child_command(args, variant, args.steps), capture_output=True, text=True)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode or not line:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(line[0][7:])


def median_run(results: list[dict]) -> dict:
    """The run with the median step time (the lower middle of an even count); an error if none ran."""
    ok = sorted((r for r in results if "step_s" in r), key=lambda r: r["step_s"])
    return ok[(len(ok) - 1) // 2] if ok else results[-1]


def per_round(runs: dict[str, list[dict]]) -> list[str]:
    """With --rounds > 1: each ratio in every round and the median of those (the table's medians are
    taken per variant, from different rounds, so their ratios and the split above mix rounds)."""
    ours = "siamdyn-default" if runs.get("siamdyn-default") else "siamdyn"
    rounds = len(runs.get(ours, []))
    if rounds < 2:
        return []
    lines = [f"- {rounds} rounds; the table and the lines above take each variant's median run; per round "
             "(median of the rounds in brackets):"]
    for fast, slow in ((ours, "typical"), (ours, "typical-bf16"), ("typical-bf16", "typical")):
        ratios = [s["step_s"] / f["step_s"] for f, s in zip(runs.get(fast, []), runs.get(slow, []))
                  if "step_s" in f and "step_s" in s]
        if ratios:
            lines.append(f"  {fast} vs {slow}: " + ", ".join(f"{r:.2f}×" for r in ratios)
                         + f" ({statistics.median(ratios):.2f}×)")
    return lines


def default_speedups(rows: dict[str, dict]) -> list[str]:
    """The headline: siamdyn with no flags, probes and metrics included, against both typical
    loops of the same run, and where its time goes."""
    ok = {k: r["step_s"] for k, r in rows.items() if "step_s" in r}
    name = "siamdyn-default" if "siamdyn-default" in ok else "siamdyn" if "siamdyn" in ok else None
    if name is None:
        return []
    ours, r = ok[name], rows[name]
    lines = ["", f"**{name} (no flags; probes included: {r.get('probes_in_window', 0)} in the timed window, "
             f"collapse metrics every step) vs the typical loops, this run:** "
             + ", ".join(f"{ok[t] / ours:.2f}× {t}" for t in ("typical", "typical-bf16") if t in ok)
             + f" ({rows[name]['mode']}, {ours:.4f} s/step wall-clock)"]
    if name == "siamdyn-default" and "siamdyn" in ok:
        lines.append(f"- split: the same loop with probes off {ok['siamdyn']:.4f} s/step, so the probes take "
                     f"{100 * (1 - ok['siamdyn'] / ours):.1f} % of the default's wall time (side by side); the run's "
                     f"own probe timer: {r['probe_s']:.3f} s per probe = {r['probe_s'] / ok['siamdyn']:.2f} training "
                     f"steps, {100 * r['probe_fraction']:.1f} % of wall at probe_every=50 (probes after the first, "
                     "which also pays the first kernels' autotuning)")
        if r.get("probe_steps_in_loop") is not None:
            lines.append(f"- a probe inside the loop (the steps around it, beyond the median step): "
                         f"{r['probe_steps_in_loop']:.2f} training steps")
    if "siamdyn-log10" in ok and "siamdyn" in ok:
        ratio = ok["siamdyn-log10"] / ok["siamdyn"]
        lines.append(f"- collapse metrics every 10th step vs every step (probes off): {ratio:.3f}× the step time, "
                     f"i.e. reading them every step costs {100 * (1 - ratio):.1f} %")
    return lines


if __name__ == "__main__":
    main()
