"""The instruments do not stall a GPU: counted here without one.

A read of a tensor's value (`.item()`, `.tolist()`, `float(t)`, `bool(t)`) waits for the
device. The training loop must make none per step, whether it logs, probes or neither: its
numbers travel through `DeferredReads` and are read from host copies. A probe must cost one
extra forward pass (shared by its two terms) and two backward passes, i.e. under two training steps.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from siamdyn.config import Config
from siamdyn.methods import SiameseMethod
from siamdyn.methods.parallel_views import view_threads
from siamdyn.probes.deferred import DeferredReads, Stopwatch
from siamdyn.probes.gradients import gradient_split_tensors
from siamdyn.probes.sync_count import count_host_reads, reading_host_copies
from siamdyn.runtime import choose_compile
from siamdyn.runs import read_metrics
from siamdyn.train import train

ROOT = os.path.join(os.path.dirname(__file__), "..")


def tiny(**kw) -> Config:
    base = dict(dataset="synthetic", limit=600, test_limit=100, batch_size=16, backbone_width=4, proj_hidden=32,
                proj_dim=16, pred_hidden=8, epochs=0, knn_every=0, knn_k=5, threads=1)
    return Config.from_preset("simsiam", {**base, **kw})


def reads_of_run(tmp_path, name: str, **kw) -> int:
    with count_host_reads() as reads:
        train(tiny(**kw), str(tmp_path / name), progress=False)
    return reads.count


@pytest.mark.parametrize("log_every,probe_every", [(1, 0), (4, 0), (1, 4)])
def test_the_loop_reads_no_value_from_the_device_per_step(tmp_path, log_every, probe_every):
    # Two runs that differ only in length (both inside one epoch: one checkpoint, one kNN each):
    # the 8 extra steps, logged, probed or not, add no read of a device value.
    short = reads_of_run(tmp_path, "a", max_steps=8, log_every=log_every, probe_every=probe_every)
    long = reads_of_run(tmp_path, "b", max_steps=16, log_every=log_every, probe_every=probe_every)
    assert long - short == 0, f"{(long - short) / 8:.2f} host reads per step"
    rows = [r for r in read_metrics(str(tmp_path / "b")) if "z_std" in r]
    assert [r["step"] for r in rows] == list(range(log_every, 17, log_every))  # every line still written
    probes = [r["step"] for r in read_metrics(str(tmp_path / "b")) if "g1_norm" in r]
    assert probes == ([1, 5, 9, 13] if probe_every else [])


def test_read_as_on_a_gpu_the_log_is_the_same(tmp_path, monkeypatch):
    # On a GPU the queue is read two steps late and the eigensolves run on a worker thread.
    train(tiny(max_steps=6), str(tmp_path / "inline"), progress=False)
    as_on_a_gpu(monkeypatch)
    train(tiny(max_steps=6), str(tmp_path / "threaded"), progress=False)
    keys = ("step", "loss", "z_erank", "feature_erank", "z_std", "cos_images")
    inline, threaded_rows = ([{k: r[k] for k in keys} for r in read_metrics(str(tmp_path / name)) if "z_std" in r]
                             for name in ("inline", "threaded"))
    assert inline == threaded_rows and len(inline) == 6


def test_rankme_every_few_steps_and_at_the_last(tmp_path):
    # On a GPU RankMe is read every 10th step by default (rank_every=0 = auto); any cadence can be set.
    train(tiny(max_steps=7, rank_every=3, collapse_rank_floor=1000.0, collapse_patience=2), str(tmp_path / "r"),
          progress=False)
    rows = [r for r in read_metrics(str(tmp_path / "r")) if "z_std" in r]
    assert [r["step"] for r in rows if "z_erank" in r] == [3, 6, 7] and len(rows) == 7
    train(tiny(max_steps=12, rank_every=4, log_every=3), str(tmp_path / "l"), progress=False)
    rows = [r for r in read_metrics(str(tmp_path / "l")) if "z_std" in r]  # logged at 3, 6, 9, 12
    assert [r["step"] for r in rows if "z_erank" in r] == [6, 9, 12]  # the first logged step of each block of 4
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    # the floor is unreachable, so the detector fires from the first reading on, carried between readings
    assert summary["collapse_step"] == 3 and "RankMe" in summary["collapse_reason"]


def test_the_counter_counts_device_reads_and_not_host_copies():
    t = torch.ones(3)
    with count_host_reads() as reads:
        t.sum().item(), t.tolist(), float(t[0]), bool(t[1]), int(t[2])
        with reading_host_copies():
            t.tolist()
    assert reads.count == 5


@pytest.mark.parametrize("threads", [False, True], ids=["sequential", "view-threads"])
def test_a_probe_costs_two_steps_of_passes(threads):
    # Count the backbone's forward passes and the backward passes through its output: a training
    # step makes 2 + 2 (two views); a probe one step's forward passes (its two terms share them) and
    # no more than two steps' backward passes.
    cfg = tiny(batch_size=8)
    model = SiameseMethod(cfg)
    passes = {"forward": 0, "backward": 0}

    def count(module, inputs, out):
        passes["forward"] += 1
        if out.requires_grad:
            out.register_hook(lambda g: passes.__setitem__("backward", passes["backward"] + 1))

    model.backbone.register_forward_hook(count)
    views = [torch.randn(8, 1, 28, 28) for _ in range(2)]
    model(views).loss.backward()
    step = dict(passes)
    passes.update(forward=0, backward=0)
    gradient_split_tensors(model, views, pool=view_threads(2, 1) if threads else None)
    assert step == {"forward": 2, "backward": 2}
    assert passes["forward"] == step["forward"] and passes["backward"] <= 2 * step["backward"]


def test_deferred_reads_on_a_cpu_are_ready_at_once_and_in_order():
    reads = DeferredReads(torch.device("cpu"))
    for i in range(3):
        reads.push(i, ("step", i), {"x": torch.tensor(float(i))})
    got = reads.ready()
    assert [m for m, _ in got] == [("step", 0), ("step", 1), ("step", 2)] and len(reads) == 0
    assert [float(t["x"]) for _, t in got] == [0.0, 1.0, 2.0]
    # in lockstep a record is due two *steps* late, however many records a step pushed (a probe's)
    lock = DeferredReads(torch.device("cpu"), lockstep=True)
    due = []
    for step in range(1, 6):
        lock.push(step, ("step", step), {})
        if step % 2:
            lock.push(step, ("probe", step), {})
        due.append([m for m, _ in lock.ready()])
    assert due == [[], [], [("step", 1), ("probe", 1)], [("step", 2)], [("step", 3), ("probe", 3)]]
    watch = Stopwatch(torch.device("cpu"))
    with watch.section():
        torch.randn(64, 64) @ torch.randn(64, 64)
    assert watch.seconds() > 0


def as_on_a_gpu(monkeypatch) -> None:
    """Make every ProbeSession read its queue as on a GPU: in lockstep, two steps late, with
    RankMe solved on the worker thread (the CUDA events aside, the same code path)."""
    from siamdyn.probes import session
    init = session.ProbeSession.__init__

    def gpu_like(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.reads.lockstep, self.solve_in_thread = True, True

    monkeypatch.setattr(session.ProbeSession, "__init__", gpu_like)


@pytest.mark.parametrize("lockstep", [False, True])
def test_a_nan_is_dated_to_its_own_step_though_reads_are_deferred(tmp_path, monkeypatch, lockstep):
    from siamdyn.errors import TrainingDiverged
    from siamdyn.methods import siamese
    forward, calls = siamese.SiameseMethod.forward, []

    def nan_at_third_step(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls.append(1)
        return dataclasses.replace(out, loss=out.loss * float("nan")) if len(calls) == 3 else out

    monkeypatch.setattr(siamese.SiameseMethod, "forward", nan_at_third_step)
    if lockstep:
        as_on_a_gpu(monkeypatch)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3;"):
        train(tiny(max_steps=8, probe_every=0), str(tmp_path / "nan"), progress=False)
    rows = [r["step"] for r in read_metrics(str(tmp_path / "nan")) if "loss" in r]
    assert rows == [1, 2]  # the steps before it were logged; nothing after it
    assert len(calls) == (5 if lockstep else 3)  # read two steps late in lockstep, at once on a CPU


def test_lockstep_reads_log_every_step_and_stop_on_collapse_at_a_fixed_lag(tmp_path, monkeypatch):
    cfg = tiny(max_steps=12, collapse_rank_floor=1000.0, collapse_patience=2, stop_on_collapse=True)
    train(cfg, str(tmp_path / "cpu"), progress=False)
    as_on_a_gpu(monkeypatch)
    train(cfg, str(tmp_path / "gpu"), progress=False)
    cpu, gpu = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("cpu", "gpu"))
    # the same collapse, dated to the same step; the GPU-like run notices it two steps later
    assert cpu["collapse_step"] == gpu["collapse_step"] == 1 and cpu["steps"] == 2 and gpu["steps"] == 4
    assert [r["step"] for r in read_metrics(str(tmp_path / "gpu")) if "z_std" in r] == [1, 2, 3, 4]


def test_compile_auto_is_off_on_cpus_and_short_runs(monkeypatch):
    import torch._dynamo
    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", torch._dynamo.config.suppress_errors)
    cfg = tiny()
    assert choose_compile(cfg, torch.device("cpu"), 10 ** 6)[0] is False
    assert choose_compile(cfg, torch.device("cuda"), 100)[0] is False
    on, why = choose_compile(cfg, torch.device("cuda"), 10 ** 5)
    assert on and "auto" in why and torch._dynamo.config.suppress_errors  # auto never ends a run
    assert choose_compile(dataclasses.replace(cfg, compile="on"), torch.device("cpu"), 1)[0] is True
    # configs written before compile became auto/on/off still load
    assert Config.from_preset("simsiam", {"compile": False}).compile == "off"
    assert Config.from_preset("simsiam", {"compile": "true"}).compile == "on"


def test_gpu_speed_check_dry_runs_on_cpu(tmp_path):
    env = {**os.environ, "SIAMDYN_GPU_CHECK_DRY": "1", "PYTHON": sys.executable}
    done = subprocess.run(["bash", "bench/gpu_check.sh", str(tmp_path), "speed"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "speed_b1024.md").read_text()
    assert "siamdyn-default" in table and "failed" not in table and "probes included" in table
    assert "host reads of tensor values per step" in (tmp_path / "instrument_cost.md").read_text()
