"""What the machine runs fast, decided at the start of a run (docs/design.md §7).

`precision=auto` becomes bf16 autocast where the hardware does bf16 matrix work natively
(a CUDA GPU with bf16 tensor cores, compute capability >= 8.0; a CPU with AMX or AVX-512
BF16 units, confirmed by a sub-second matmul measurement) and fp32 elsewhere: on a CPU
without those units bf16 is emulated and runs many times slower than fp32. The resolved
value, with its reason, is what the run's config.yaml records, so a resume keeps it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable

import torch

from siamdyn.config import Config

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 autocast also adds casts around every matmul; below this measured matmul speed-up over
# fp32 it does not pay (bench/results/ holds the step speed-ups per machine kind).
MIN_BF16_SPEEDUP = 1.3


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str  # "fp32" or "bf16"
    reason: str


def _cpuinfo(key: str) -> str | None:
    """The first `key : value` of /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == key), None)
    except OSError:
        return None


# Environment settings that change which CPU kernels run (and so the rounding): part of what
# reproduces a run or a benchmark, recorded with both.
KERNEL_ENV_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")


def kernel_env() -> dict[str, str]:
    """The kernel-choosing environment settings that are set, e.g. {"ONEDNN_MAX_CPU_ISA": "AVX2"}."""
    return {k: os.environ[k] for k in KERNEL_ENV_VARS if k in os.environ}


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str] | None:
    """The CPU's feature flags, or None where the OS does not list them."""
    flags = _cpuinfo("flags")
    return flags.split() if flags is not None else None


def cpu_bf16_units() -> list[str]:
    """The native bf16 units of this CPU, by its flags where the OS lists them, else by what
    torch's own CPU feature checks report."""
    flags = cpu_flags()
    if flags is not None:
        return [f for f in BF16_CPU_FLAGS if f in flags]
    checks = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    return [flag for flag, fn in checks.items() if getattr(torch.cpu, fn, lambda: False)()]


def matmul_bf16_speedup(seconds: float = 0.15, n: int = 512) -> float:
    """Measured bf16 / fp32 speed of an n×n matmul on this CPU, `seconds` per dtype."""
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up: the first call picks and JITs the kernel
        reps, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            a @ b
            reps += 1
        rates[dtype] = reps / (time.perf_counter() - t)
    return rates[torch.bfloat16] / rates[torch.float32]


def choose_precision(device: torch.device, units: Callable[[], list[str]] = cpu_bf16_units,
                     speedup: Callable[[], float] = matmul_bf16_speedup) -> PrecisionChoice:
    """What `precision=auto` means on `device` (the checks are arguments, so tests can play
    any machine)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return PrecisionChoice("bf16", f"CUDA compute capability {major}.{minor} has bf16 tensor cores")
        return PrecisionChoice("fp32", f"CUDA compute capability {major}.{minor} has no bf16 tensor cores")
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"no bf16 rule for device {device.type}")
    found = units()
    if not found:
        return PrecisionChoice("fp32", "this CPU has no AMX / AVX-512 BF16 units (bf16 would be emulated)")
    measured = speedup()
    if measured < MIN_BF16_SPEEDUP:
        return PrecisionChoice("fp32", f"the CPU reports {', '.join(found)} but a bf16 matmul measured only "
                                       f"{measured:.2f}x fp32")
    return PrecisionChoice("bf16", f"the CPU has {', '.join(found)}; a bf16 matmul measured {measured:.1f}x fp32")


@functools.lru_cache(maxsize=None)
def machine_precision(device: torch.device) -> PrecisionChoice:
    """`choose_precision` measured once per process and device, so every run of an experiment
    grid in one process gets the same answer."""
    return choose_precision(device)


Choice = Callable[[torch.device], PrecisionChoice]


def resolve_precision(cfg: Config, device: torch.device, saved: Config | None = None,
                      choose: Choice = machine_precision) -> tuple[Config, PrecisionChoice]:
    """`cfg` with precision=auto replaced by fp32 or bf16, and why. A resumed run keeps the
    precision it was started with (`saved`), so its trajectory does not change mid-run."""
    if cfg.precision != "auto":
        started = saved is not None and saved.precision == cfg.precision
        return cfg, PrecisionChoice(cfg.precision, "the run was started with it" if started else "set in the config")
    if saved is not None and saved.precision in ("fp32", "bf16"):
        choice = PrecisionChoice(saved.precision, "the run was started with it")
    else:
        choice = choose(device)
    return dataclasses.replace(cfg, precision=choice.precision), choice
