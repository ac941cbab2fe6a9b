"""Parallel views (methods/parallel_views.py): each view's forward and backward on a thread of its own,
with the sequential step's result: the same gradients, the same BatchNorm running statistics."""
import contextlib
import json
import os
import threading
import time

import pytest
import torch

from siamdyn.checkpoint import Checkpoint
from siamdyn.config import Config
from siamdyn.distributed import Dist
from siamdyn.errors import ConfigError
from siamdyn.methods import SiameseMethod
from siamdyn.methods import parallel_views as pv
from siamdyn.runtime import choose_parallel_views, load_data
from siamdyn.train import train
from tests.conftest import TINY, needs_fmnist

NHWC = torch.channels_last


def method_and_views(precision: str = "fp32", **over) -> tuple[SiameseMethod, list[torch.Tensor]]:
    cfg = Config.from_preset("simsiam", {**TINY, "precision": precision, "channels_last": "on", **over})
    torch.manual_seed(0)
    train_set, _ = load_data(cfg)
    x = train_set.images[:32].float().div(255)
    views = [(x + 0.1 * torch.randn_like(x)).contiguous(memory_format=NHWC) for _ in range(2)]
    return SiameseMethod(cfg, train_set.shape[0]).to(memory_format=NHWC), views


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's thread count set to `n` inside the block (an earlier run's `threads=` may have left another)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_thread():
    """The caller at the thread count each view gets in parallel (one), so a target it makes matches too."""
    return torch_threads(1)


def sequential(model: SiameseMethod, views: list[torch.Tensor], xbar: torch.Tensor | None = None):
    """The reference: one forward, one backward."""
    with one_thread():
        model.zero_grad(set_to_none=True)
        out = model(views, xbar)
        out.loss.backward()
    return out


def parallel(model: SiameseMethod, views: list[torch.Tensor], xbar: torch.Tensor | None = None):
    with one_thread():
        model.zero_grad(set_to_none=True)
        return pv.forward_backward(model, views, xbar, pv.view_threads(2, 1))


def state(model: SiameseMethod) -> dict[str, torch.Tensor]:
    """Every gradient and buffer (BatchNorm running statistics and counters)."""
    return {**{f"grad:{k}": p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
            **{f"buffer:{k}": b.clone() for k, b in model.named_buffers()}}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} of {len(a)} differ, first {differ[:3]}"


@pytest.mark.parametrize("target", ["online", "ema", "view_mean"])
def test_fp32_parallel_step_is_the_sequential_step_bit_for_bit(target):
    extra = {"target": target, "mean_views": 2} if target == "view_mean" else {"target": target}
    model, views = method_and_views(**extra)
    xbar = torch.stack(views).mean(0) if target == "view_mean" else None
    ref_model, _ = method_and_views(**extra)
    ref_model.load_state_dict(model.state_dict())
    for _ in range(2):  # the second step starts from the running statistics the first left
        ref, out = sequential(ref_model, views, xbar), parallel(model, views, xbar)
        assert torch.equal(out.loss, ref.loss.detach())
        assert all(torch.equal(a, b) for a, b in zip(out.z, ref.z))
        assert_same(state(model), state(ref_model))
        assert any(k.startswith("grad:backbone") for k in state(model))


def test_batchnorm_running_statistics_follow_view_order_when_view_1_runs_ahead():
    """View 0's thread is held back at its first layer: without the order, view 1 would update every
    running statistic first and the buffers would differ from the sequential step's."""
    model, views = method_and_views()
    ref_model, _ = method_and_views()
    ref_model.load_state_dict(model.state_dict())
    sequential(ref_model, views)

    def hold_view0(module, args):
        if threading.current_thread().name == "siamdyn-view0":
            time.sleep(0.3)
    handle = model.backbone.stem.register_forward_pre_hook(hold_view0)
    try:
        parallel(model, views)
    finally:
        handle.remove()
    assert_same(state(model), state(ref_model))


def test_a_failing_view_raises_in_the_caller_and_leaves_no_thread_waiting():
    model, views = method_and_views()
    bad = [views[0], views[1].repeat(1, 3, 1, 1)]  # 3 channels for a 1-channel stem: fails inside its thread
    with pytest.raises(RuntimeError):
        parallel(model, bad)
    with pytest.raises(RuntimeError):  # view 0 fails first: view 1, waiting on view 0's BatchNorm, goes on
        parallel(model, bad[::-1])
    parallel(model, views)  # the pool still works


def test_each_view_thread_has_its_own_thread_count_and_later_threads_get_the_callers():
    """A worker's torch.set_num_threads also sets the process-wide count that a thread started later
    copies on its first call; the pool puts the caller's back."""
    with torch_threads(2):
        pool = pv.ViewThreads(2, 1)
        try:
            assert pool.run([torch.get_num_threads, torch.get_num_threads]) == [1, 1]
            assert pool.run([lambda: threading.current_thread().name] * 2) == ["siamdyn-view0", "siamdyn-view1"]
            seen = []
            later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
            later.start()
            later.join()
            assert seen == [2]
        finally:
            pool.close()


def test_wrong_counts_fail_before_any_view_runs():
    with pytest.raises(ValueError, match="at least one worker and one thread"):
        pv.ViewThreads(2, 0)
    ran = []
    with pytest.raises(ValueError, match="1 jobs for 2 view threads"):
        pv.view_threads(2, 1).run([lambda: ran.append(1)])
    assert ran == []
    model, views = method_and_views()
    before = {k: b.clone() for k, b in model.named_buffers()}
    with pytest.raises(ValueError, match="3 views for 2 view threads"):
        parallel(model, views + views[:1])
    assert all(torch.equal(b, before[k]) for k, b in model.named_buffers())


def test_a_batchnorm_layer_run_twice_in_one_view_is_refused():
    """Its running statistics could not follow the sequential order: a clear error, not a wrong result."""
    model, views = method_and_views()
    assert isinstance(model.projector[1], torch.nn.BatchNorm1d)
    model.projector.insert(2, model.projector[1])  # the same layer again, right after itself
    with pytest.raises(RuntimeError, match=r"BatchNorm layer 'projector.1' runs twice in one view's forward"):
        parallel(model, views)


def test_bf16_parallel_step_matches_the_sequential_step_to_rounding():
    """Under bf16 autocast a weight cast once for both views (autocast's cache) gets their two gradients
    summed in fp32 where they reach the parameter, not in bf16 before the cast: those differ by a
    rounding; BatchNorm's parameters and statistics, never cast, are equal (oneDNN's weight gradients
    only: the timed kernel choice would alternate kernels between the two runs)."""
    model, views = method_and_views("bf16", conv_weight_grad="torch")
    ref_model, _ = method_and_views("bf16", conv_weight_grad="torch")
    ref_model.load_state_dict(model.state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parallel(model, views)
        sequential(ref_model, views)
    a, b = state(model), state(ref_model)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    cast = {f"grad:{n}.{p}" for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
            for p, _ in m.named_parameters(recurse=False)}
    assert differ and set(differ) <= cast, set(differ) - cast
    for k in differ:
        assert (a[k] - b[k]).abs().max() / b[k].abs().max() < 1e-2, k


def test_auto_says_why_it_is_off_and_on_refuses_what_it_cannot_run():
    cpu = torch.device("cpu")
    model, _ = method_and_views()

    def choose(**over):
        return choose_parallel_views(Config.from_preset("simsiam", {**TINY, **over}), cpu, Dist(), False, model)
    with torch_threads(2):
        pool, why = choose()
        assert pool is not None and why == "auto: on, 1 thread(s) per view"
        assert choose(parallel_views="off") == (None, "parallel_views=off")
        assert choose(deterministic=True) == (None, "auto: off (deterministic=true)")
        for over, word in [({"grad_terms": "both"}, "grad_terms=both"), ({"fuse_views": True}, "fuse_views")]:
            pool, why = choose(**over)
            assert pool is None and word in why
            with pytest.raises(ConfigError, match=f"parallel_views=on cannot run here: .*{word}"):
                choose(parallel_views="on", **over)
        on = Config.from_preset("simsiam", {**TINY, "parallel_views": "on"})
        with pytest.raises(ConfigError, match="CPUs only"):
            choose_parallel_views(on, torch.device("meta"), Dist(), False, model)
        with pytest.raises(ConfigError, match="torch.compile"):
            choose_parallel_views(on, cpu, Dist(), True, model)
    with torch_threads(1):
        assert choose() == (None, "auto: off (1 thread(s) for 2 views)")


def test_a_batchnorm_layer_in_two_places_keeps_auto_off():
    model, _ = method_and_views()
    model.projector.insert(2, model.projector[1])
    with torch_threads(2):
        pool, why = choose_parallel_views(Config.from_preset("simsiam", TINY), torch.device("cpu"), Dist(), False,
                                          model)
    assert pool is None and why == "auto: off (a BatchNorm layer sits in two places of the model)"


def test_state_outside_batchnorm_keeps_auto_off():
    model, _ = method_and_views()
    model.backbone.register_buffer("steps_seen", torch.zeros(()))
    with torch_threads(2):
        pool, why = choose_parallel_views(Config.from_preset("simsiam", TINY), torch.device("cpu"), Dist(), False,
                                          model)
    assert pool is None and why == "auto: off (the model has buffers outside BatchNorm)"


@needs_fmnist
def test_a_training_run_with_parallel_views_equals_the_sequential_run_at_one_thread_per_view(tmp_path, monkeypatch):
    """The whole loop: parallel views at one thread per view against parallel_views=off at one thread,
    fp32: the same losses, gradient-split records and final weights (BatchNorm buffers included)."""
    base = {**TINY, "dataset": "fashion-mnist", "limit": 256, "test_limit": 64, "max_steps": 4, "epochs": 1,
            "channels_last": "on", "knn_every": 0, "lr": 0.01}
    from siamdyn.probes import gradients
    runs, threaded, split, name = {}, [], gradients.split_on_view_threads, ""
    monkeypatch.setattr(gradients, "split_on_view_threads", lambda *a: threaded.append(name) or split(*a))
    for name, over in {"parallel": {"parallel_views": "on", "threads": 2},
                       "sequential": {"parallel_views": "off", "threads": 1}}.items():
        threads = torch.get_num_threads()
        try:
            train(Config.from_preset("simsiam", {**base, **over}), str(tmp_path / name), progress=False)
        finally:
            torch.set_num_threads(threads)
        lines = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs[name] = [d["loss"] for d in lines if "loss" in d]  # the caller's own readings run at its thread count
        runs[name + "/split"] = [{k: v for k, v in d.items() if k.startswith(("g1_", "g2_", "cos_g1", "dl_dp"))}
                                 for d in lines if "g1_norm" in d]
        runs[name + "/weights"] = Checkpoint.load_run(str(tmp_path / name)).model
    assert len(runs["parallel"]) == 4 and runs["parallel"] == runs["sequential"]
    # the probe ran on the view threads (the norms are summed on the caller's two threads: to rounding)
    assert threaded == ["parallel"] * len(runs["parallel/split"]) and runs["parallel/split"]
    for got, ref in zip(runs["parallel/split"], runs["sequential/split"]):
        assert got == pytest.approx(ref, rel=1e-5)
    assert_same(runs["parallel/weights"], runs["sequential/weights"])


@pytest.mark.parametrize("preset", ["simsiam", "byol", "xbar"])
def test_the_gradient_split_on_view_threads_is_the_sequential_split_bit_for_bit(preset, monkeypatch):
    """fp32, one thread per view against the sequential split at one thread: every number of the record,
    the buffers restored; the x̄ target (eq. 10), whose term 2 reaches a third branch, stays sequential."""
    from siamdyn.probes import gradients
    cfg = Config.from_preset(preset, {**TINY, "channels_last": "on", "mean_views": 2})
    torch.manual_seed(0)
    model = SiameseMethod(cfg, 1).to(memory_format=NHWC)
    _, views = method_and_views()
    xbar = torch.stack(views).mean(0) if preset == "xbar" else None
    threaded = []
    split = gradients.split_on_view_threads
    monkeypatch.setattr(gradients, "split_on_view_threads", lambda *a: threaded.append(1) or split(*a))
    before = {k: b.clone() for k, b in model.named_buffers()}
    with one_thread():
        ref = gradients.gradient_split_tensors(model, views, xbar)
        got = gradients.gradient_split_tensors(model, views, xbar, pool=pv.view_threads(2, 1))
    assert threaded == ([] if preset == "xbar" else [1])
    assert all(torch.equal(b, before[k]) for k, b in model.named_buffers())
    assert ref.keys() == got.keys() and "g2_norm" in got
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in ref.items()}
    assert float(got["g2_norm"]) > 0 and float(got["g1_norm"]) > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_makes_its_own_view_threads():
    """A forked process has none of its parent's threads: the pool it inherited must not be used there."""
    parent = pv.view_threads(2, 1)
    assert parent.run([lambda: 1, lambda: 2]) == [1, 2]
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only, never return into pytest
        ok = False
        try:
            fresh = pv.view_threads(2, 1)
            ok = fresh is not parent and fresh.run([lambda: 3, lambda: 4]) == [3, 4]
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:  # the inherited pool's threads do not exist in the child: its jobs would wait forever
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
    assert pv.view_threads(2, 1) is parent and parent.run([lambda: 5, lambda: 6]) == [5, 6]
