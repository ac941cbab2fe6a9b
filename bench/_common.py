"""What every bench script shares: siamdyn's src on the path, the header of a results
file (title, date, machine, the exact command) and writing it where asked."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
# The load when the bench script started, before its own work loads the machine (Unix only).
START_LOAD = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3


def header(title: str, device: str = "cpu") -> list[str]:
    import torch

    from siamdyn.hardware import choose_precision, cpu_flags, cpu_model, kernel_env
    from siamdyn.runtime import pick_device
    # Settings that change which kernels run are part of the command that reproduces a result.
    env = [f"{k}={v}" for k, v in kernel_env().items()]
    command = " ".join([*env, "python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    model, flags = cpu_model(), sorted(f for f in cpu_flags() or [] if f.startswith(("avx", "amx", "fma")))
    device = str(pick_device(device))  # a config's "auto" names the device it resolves to
    auto = choose_precision(torch.device(device))
    return [f"# {title} ({datetime.date.today()})", "",
            f"- machine: {platform.machine()}, {model}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"capability {torch.backends.cpu.get_cpu_capability()}, device {device}",
            f"- CPU flags: {' '.join(flags) or 'unknown'}",
            f"- precision=auto here: {auto.precision} ({auto.reason})",
            f"- load average (1, 5, 15 min) when the script started: {' '.join(f'{x:.2f}' for x in START_LOAD)} "
            "(benchmark on an idle machine)",
            f"- command: `{command}`"]


def median_ms(fn: Callable[[Any], Any], inputs: list, reps: int, skip: int = 2) -> float:
    """Median milliseconds of `fn(input)` over `reps` calls after `skip` untimed ones, cycling
    through `inputs` (several different tensors keep the caches as cold as in a training step)."""
    times = []
    for i in range(reps + skip):
        start = time.perf_counter()
        fn(inputs[i % len(inputs)])
        times.append(time.perf_counter() - start)
    return statistics.median(times[skip:]) * 1e3


def finished_summary(run_dir: str) -> dict | None:
    """The summary.json of a run that finished (train writes it last), else None."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def emit(lines: list[str], path: str | None) -> None:
    """Print the results file and, if `path`, write it there."""
    text = "\n".join(lines) + "\n"
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text)
