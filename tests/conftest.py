import hashlib
import os

import pytest
import torch

from siamdyn.data.datasets import DEFAULT_DATA_DIRS

# One thread per core this process may use (its affinity, not the machine's count): more
# threads than cores make oneDNN's kernels spin against each other.
torch.set_num_threads(min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))

TRACEBACK = "Traceback (most recent call last)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """No output that pytest captured for a test may hold a Python traceback: every command ends in one
    line or exit 0. This sees what reached the real stdout/stderr unread (a CLI call whose output the
    test did not read, a warning, a logging handler); output a test read itself (capsys, redirect_stderr)
    is that test's to check, and the CLI tests assert "Traceback" not in it. A test that prints one on
    purpose says so with @pytest.mark.traceback_expected."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.passed and "traceback_expected" not in item.keywords:
        printed = report.capstdout + report.capstderr
        if TRACEBACK in printed:
            at = printed.index(TRACEBACK)
            report.outcome = "failed"
            report.longrepr = f"the test printed a traceback:\n{printed[max(0, at - 200):at + 1500]}"


@pytest.fixture(autouse=True)
def torch_determinism_restored():
    """torch.use_deterministic_algorithms is process-wide: a test that trains with deterministic=true
    must not switch it on for the tests after it (measured conv kernels, for one, stand down under it)."""
    import siamdyn.runtime as runtime
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    runtime._determinism_ours = False


HAVE_FMNIST = os.path.exists(os.path.join(DEFAULT_DATA_DIRS["fashion-mnist"], "train-images-idx3-ubyte.gz"))
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST,
                                  reason="dataset-fashion-mnist not installed (bash scripts/setup.sh installs it)")

# Small everything: the real code paths on a few hundred images.
TINY = dict(dataset="synthetic", backbone_width=4, proj_hidden=32, proj_dim=32, pred_hidden=8,
            batch_size=32, epochs=1, knn_k=20, log_every=1, precision="fp32")  # bit-exact tests: fp32 on any CPU


def run_digest(folder: str, skip: tuple[str, ...] = ()) -> str:
    """sha256 over every file name and content below `folder` (but `skip`): a run must not change."""
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(set(files) - set(skip)):
            path = os.path.join(root, f)
            if not os.path.isfile(path):  # a FIFO planted by a hostile case: its kind, never its (blocking) read
                h.update(f.encode() + oct(os.lstat(path).st_mode).encode())
                continue
            with open(path, "rb") as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


def with_second_worker(grid: str, budget: str, out: str, work, seeds: int | None = None) -> None:
    """Run `work()` in this process while a second `siamdyn experiment GRID` process shares OUT, as
    bench/findings.sh runs one worker per core: run locks keep each run to one worker."""
    import subprocess
    import sys
    command = [sys.executable, "-m", "siamdyn", "experiment", grid, "--budget", budget, "--out", out, "--no-progress"]
    command += ["--seeds", str(seeds)] if seeds else []
    other = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        work()
    finally:
        log = other.communicate(timeout=900)[0]
    assert other.returncode == 0, log[-2000:]
