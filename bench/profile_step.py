"""Where a training step's time goes: torch.profiler over siamdyn's real loop.

    python bench/profile_step.py [--steps 8] [--width 16] [--precision auto|fp32|bf16]
                                 [--out bench/results/profile_cpu.md]

Profiles all of `siamdyn.train.train` (simsiam, fmnist-small defaults, probes off) for
--steps + 2 steps, and groups the operators' self time into what they are: convolution
forward/backward, BatchNorm, elementwise, matmul (heads), augmentation, optimizer, other.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from collections import defaultdict

import yaml
from _common import emit, header
from torch._C._profiler import _ExperimentalConfig
from torch.profiler import ProfilerActivity, profile

from siamdyn.config import Config  # noqa: E402
from siamdyn.train import train  # noqa: E402

# First match wins: operator-name fragments → category.
CATEGORIES = [
    ("convolution backward", ("convolution_backward", "mkldnn_convolution_backward")),
    ("convolution forward", ("convolution", "conv2d")),
    ("BatchNorm fwd+bwd", ("batch_norm", "native_batch_norm")),
    ("matmul (heads, loss, im2col)", ("addmm", "mm", "bmm", "linear", "matmul")),
    ("augmentation sampling", ("grid_sampler", "affine_grid", "interpolate", "upsample")),
    ("optimizer", ("sgd", "_foreach", "lerp")),
    ("dtype casts (autocast)", ("_to_copy",)),
    ("elementwise / reductions", ("add", "mul", "relu", "threshold", "div", "sub", "sum", "mean", "copy_", "clamp",
                                  "where", "exp", "pow", "sqrt", "norm", "fill_", "zero_", "cat", "stack", "to")),
]


def category(op: str) -> str:
    name = op.lower()
    for label, fragments in CATEGORIES:
        if any(f in name for f in fragments):
            return label
    return "other"


def tensor_shapes(shapes: list, most: int = 3) -> str:
    """'256×16×28×28, 16×16×3×3' for the profiler's input shapes: the first `most` tensor inputs
    (scalars and absent arguments, recorded as [], are left out; '—' when none was recorded)."""
    dims = [s for s in shapes if s and all(isinstance(d, int) for d in s)][:most]
    return ", ".join("×".join(map(str, s)) for s in dims) or "—"


def all_threads_config() -> tuple[_ExperimentalConfig, bool]:
    """The profiler config that records every thread (parallel views run each view on a worker thread;
    without it only the caller's ops appear), and whether this torch has it (a private option)."""
    try:
        return _ExperimentalConfig(profile_all_threads=True), True
    except TypeError:
        return _ExperimentalConfig(), False


def profile_train(cfg: Config) -> tuple[profile, str]:
    """torch.profiler over one `train(cfg)`, and why parallel views were on or off (the run's config.yaml)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cfg.device == "cuda" else [])
    config, every_thread = all_threads_config()
    with tempfile.TemporaryDirectory() as out:
        with profile(activities=activities, record_shapes=True, experimental_config=config) as prof:
            train(cfg, out, progress=False)
        with open(os.path.join(out, "config.yaml")) as f:
            views = yaml.safe_load(f)["resolved"]["parallel_views"]
    return prof, views if every_thread else f"{views} (this torch profiles the caller's thread only)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="bf16 on a machine with AMX / AVX-512 BF16 shows where the bf16 step's time goes")
    p.add_argument("--out")
    args = p.parse_args()
    cfg = Config.from_preset("simsiam", {"backbone_width": args.width, "epochs": 0, "max_steps": args.steps + 2,
                                         "precision": args.precision,
                                         "probe_every": 0, "knn_every": 0, "limit": 2560, "test_limit": 100})
    prof, views = profile_train(cfg)
    totals: dict[str, float] = defaultdict(float)
    top = []
    for e in prof.key_averages(group_by_input_shape=True):
        totals[category(e.key)] += e.self_cpu_time_total
        top.append((e.self_cpu_time_total, e.key, e.count, tensor_shapes(e.input_shapes)))
    whole = sum(totals.values())
    lines = [*header("Where the time of a training step goes", cfg.device),
             f"- simsiam, width {args.width}, batch {cfg.batch_size}, channels_last {cfg.channels_last}, "
             f"precision {args.precision}, probes off; "
             f"the whole `train()` of {args.steps + 2} steps is profiled (the final kNN over 2 660 images is in "
             "'other' and 'convolution forward')",
             f"- parallel views {views}",
             "- self CPU time: time inside operators, summed over the threads that call them (the two view "
             "threads overlap in time; an operator's own OpenMP workers are not counted apart)", "",
             "| category | self CPU time (s) | share |", "|---|---|---|"]
    for label, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {label} | {t / 1e6:.2f} | {100 * t / whole:.1f} % |")
    lines += ["", "Top 15 operators by self time, grouped by the shapes of all their inputs:", "",
              "| operator | tensor inputs (first three) | calls | self CPU (s) | share |", "|---|---|---|---|---|"]
    for t, key, count, shape in sorted(top, reverse=True)[:15]:
        lines.append(f"| `{key}` | {shape} | {count} | {t / 1e6:.2f} | {100 * t / whole:.1f} % |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
