"""bench/profile_step.py and bench/memory_bound.py at toy sizes: the profile sees the view threads' work,
and the memory table has its rows."""
import subprocess
import sys
from pathlib import Path

import pytest

from siamdyn.config import Config
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def profile_step(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import profile_step
    return profile_step


def test_the_profile_records_the_view_threads_work(profile_step):
    cfg = Config.from_preset("simsiam", {**TINY, "max_steps": 2, "parallel_views": "on", "threads": 2,
                                         "probe_every": 0, "knn_every": 0, "limit": 64, "test_limit": 32})
    prof, views = profile_step.profile_train(cfg)
    assert views.startswith("parallel_views=on")
    events = prof.events()
    threads = {e.thread for e in events if e.name == "aten::native_batch_norm"}
    caller = {e.thread for e in events if e.name.startswith("Optimizer.step")}  # the training loop's own thread
    # the views' BatchNorm calls run on the two worker threads only; without profile_all_threads none appear
    assert len(caller) == 1 and len(threads) == 2 and not threads & caller


def test_memory_bound_writes_its_table(tmp_path):
    out = tmp_path / "memory.md"
    cmd = [sys.executable, "bench/memory_bound.py", "--cycle-mb", "8", "--reps", "1", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in out.read_text().splitlines() if line.startswith("| residual add")]
    assert len(rows) == 4 and all(line.count("|") == 8 for line in rows)
