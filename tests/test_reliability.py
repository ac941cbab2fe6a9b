"""Crash safety: SIGKILL at random steps + --resume is bit-identical; SIGTERM saves and
tells how to resume; non-finite gradients name their module; a failed write keeps the old file."""
import contextlib
import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from siamdyn.config import Config
from siamdyn.errors import SiamdynError, TrainingDiverged
from siamdyn.methods import SiameseMethod
from siamdyn.runs import atomic_save, read_metrics
from siamdyn.train import train
from tests.conftest import TINY

# 2 epochs of 18 steps on the synthetic set, a checkpoint after every step.
RUN = {**TINY, "epochs": 2, "deterministic": True, "ckpt_every": 1, "probe_every": 5, "knn_every": 0}


def _argv(out, resume=False):
    sets = [a for k, v in RUN.items() for a in ("--set", f"{k}={v}")]
    return [sys.executable, "-m", "siamdyn", "train", "--preset", "byol", "--out", str(out), "--no-progress",
            *sets, *(["--resume"] if resume else [])]


def _last_step(out):
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    return max((r.get("step", 0) for r in read_metrics(str(out))), default=0)


def _kill_at(out, step, resume):
    """Start (or resume) the run and SIGKILL it once its log has reached `step`."""
    proc = subprocess.Popen(_argv(out, resume), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _last_step(out) < step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"run ended before step {step}: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    ref = tmp_path_factory.mktemp("reference") / "ref"
    subprocess.run(_argv(ref), check=True, capture_output=True)
    return ref


def _assert_same_run(ref, cut, note):
    """Weights, momentum buffers and every logged (step, loss) equal bit for bit."""
    a = torch.load(ref / "ckpt" / "last.pt", weights_only=True)
    b = torch.load(cut / "ckpt" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 36
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), (note, k)
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"]), (note, k)
    # The resumed log holds each step once, as the uninterrupted one does.
    losses = lambda d: [(r["step"], r["loss"]) for r in read_metrics(str(d)) if "loss" in r]  # noqa: E731
    assert losses(cut) == losses(ref), note


def test_sigkill_at_three_random_steps_then_resume_is_bit_identical(uninterrupted, tmp_path):
    cut = tmp_path / "cut"
    kills = sorted(random.Random(int(time.time())).sample(range(3, 34), 3))
    for i, k in enumerate(kills):
        _kill_at(cut, k, resume=i > 0)
    done = subprocess.run(_argv(cut, resume=True), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-800:]
    _assert_same_run(uninterrupted, cut, kills)


@pytest.mark.parametrize("signals", [("SIGINT",), ("SIGTERM",), ("SIGINT", "SIGINT")])
def test_every_stop_is_an_exact_resume_point(uninterrupted, tmp_path, signals):
    """Ctrl-C, SIGTERM and a second Ctrl-C 20 ms after the first all stop at a step boundary
    with a whole checkpoint; the resumed run ends as the uninterrupted one."""
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_argv(cut), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    at = random.Random(int(time.time())).randrange(3, 30)
    while _last_step(cut) < at and proc.poll() is None:
        time.sleep(0.005)
    for name in signals:
        proc.send_signal(getattr(signal, name))
        time.sleep(0.02)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 2 and "--resume" in err and "Traceback" not in err, err[-800:]
    done = subprocess.run(_argv(cut, resume=True), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-800:]
    _assert_same_run(uninterrupted, cut, (signals, at))


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_argv(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while _last_step(out) < 4 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 2 and "--resume" in err and "Traceback" not in err
    step = torch.load(out / "ckpt" / "last.pt", weights_only=False)["step"]
    assert step >= 4 and _last_step(out) == step
    # `--resume` alone reads the run's own config; a second one finds the run finished and changes nothing.
    alone = [sys.executable, "-m", "siamdyn", "train", "--out", str(out), "--resume", "--no-progress"]
    done = subprocess.run(alone, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and _last_step(out) == 36, done.stderr[-800:]
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    again = subprocess.run(alone, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already finished at step 36" in again.stderr
    assert before == {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}


def test_nonfinite_gradient_names_the_module_nearest_the_loss():
    model = SiameseMethod(Config.from_preset("simsiam", TINY), 1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    assert model.nonfinite_gradient() is None and model.nonfinite_gradient(torch.tensor(0.3)) is None
    assert model.nonfinite_gradient(torch.tensor(float("nan"))) == "loss"
    model.backbone.stage2[0].conv1.weight.grad[0, 0, 0, 0] = float("nan")
    assert model.nonfinite_gradient().startswith("stage2 (")
    model.projector[0].weight.grad[0, 0] = float("inf")
    assert model.nonfinite_gradient() == "projector (0.weight)"
    assert model.nonfinite_gradient(torch.tensor(float("inf"))) == "loss"  # a bad loss is named before its gradients


def test_diverging_run_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    cfg = Config.from_preset("simsiam", {**TINY, "max_steps": 3, "ckpt_every": 1})
    train(cfg, str(out), progress=False)
    before = (out / "ckpt" / "last.pt").read_bytes()
    # lr 1e30 sends the weights to inf within a step or two; the loss or a gradient turns non-finite.
    with pytest.raises(TrainingDiverged, match=r"at step \d+.*last good checkpoint"):
        train(cfg.replace(lr=1e30, max_steps=20), str(tmp_path / "boom"), progress=False)
    assert (out / "ckpt" / "last.pt").read_bytes() == before
    # before its first checkpoint there is none to point at (it used to name a ckpt/last.pt that did not exist)
    with pytest.raises(TrainingDiverged, match=r"no checkpoint was written before it \(start again with --overwrite"):
        train(cfg.replace(lr=1e30, max_steps=20, ckpt_every=0), str(tmp_path / "early"), progress=False)
    assert not (tmp_path / "early" / "ckpt" / "last.pt").exists()


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "last.pt")
    atomic_save({"step": 1}, path)

    class Full:
        def __reduce__(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SiamdynError, match="No space left on device.*previous version is kept"):
        atomic_save({"step": 2, "x": Full()}, path)
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind


def test_half_written_metric_lines_are_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n" + '{"step": 2, "lo')
    assert read_metrics(str(tmp_path)) == [{"step": 1, "loss": 0.5}]


def test_a_second_writer_into_a_run_directory_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    long_run = _argv(out) + ["--set", "epochs=200"]  # still running while the others try
    proc = subprocess.Popen(long_run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while _last_step(out) < 2 and proc.poll() is None:
        time.sleep(0.005)
    try:
        for extra in ([], ["--overwrite"], ["--resume"]):
            second = subprocess.run(long_run + extra, capture_output=True, text=True, timeout=120)
            holder = re.search(r"in use by process (\d+);", second.stderr)
            # The PID the holder wrote for itself (this sandbox's /proc cannot confirm PIDs across processes).
            assert second.returncode == 2 and holder and holder[1] == (out / ".lock").read_text().strip(), \
                second.stderr
            assert second.stderr.count("\n") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    steps = [r["step"] for r in read_metrics(str(out)) if "loss" in r]
    assert steps == list(range(1, len(steps) + 1))  # one writer: every step logged once


def test_warnings_for_constant_images_exploding_weights_and_too_many_threads(tmp_path, capsys, monkeypatch):
    import siamdyn.runtime as runtime
    from siamdyn.data import ImageData
    real_load = runtime.load_split

    def constant(*a, **k):  # the synthetic set with every pixel 7
        data = real_load(*a, **k)
        return ImageData(torch.full_like(data.images, 7), data.labels, data.classes)
    monkeypatch.setattr(runtime, "load_split", constant)
    train(Config.from_preset("simsiam", {**TINY, "max_steps": 1, "knn_every": 0}), str(tmp_path / "c"), progress=False)
    assert "the images are constant" in capsys.readouterr().err
    monkeypatch.setattr(runtime, "load_split", real_load)
    cfg = Config.from_preset("simsiam", {**TINY, "optimizer": "adamw", "lr": 1000.0, "weight_decay": 0.0,
                                         "max_steps": 4, "ckpt_every": 2, "knn_every": 0,
                                         "threads": len(os.sched_getaffinity(0)) + 1})
    with contextlib.suppress(TrainingDiverged):  # it may also go non-finite; the warning comes first
        train(cfg, str(tmp_path / "big"), progress=False)
    err = capsys.readouterr().err
    assert "more than the" in err and "cores" in err
    assert "the weights' norm grew" in err
    torch.set_num_threads(min(2, len(os.sched_getaffinity(0))))  # undo the run's threads setting


def test_run_files_get_the_users_usual_mode(tmp_path):
    train(Config.from_preset("simsiam", {**TINY, "max_steps": 1, "knn_every": 0}), str(tmp_path / "r"), progress=False)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.yaml", "summary.json", os.path.join("ckpt", "last.pt")):
        assert os.stat(tmp_path / "r" / name).st_mode & 0o777 == 0o666 & ~mask, name  # not mkstemp's 0600


def test_resume_into_a_run_directory_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """A run dir the user may read but not write (another user's, a read-only mount): one line,
    exit 2, the run unchanged. Root ignores file modes, so the refusal is played by `open`."""
    import builtins

    from siamdyn.cli import main
    from tests.conftest import run_digest
    out = str(tmp_path / "run")
    common = ["--out", out, "--dataset", "synthetic", "--set", "backbone_width=4", "--set", "proj_hidden=16",
              "--set", "proj_dim=16", "--set", "pred_hidden=8", "--set", "batch_size=16", "--no-progress"]
    assert main(["train", *common, "--set", "max_steps=2"]) == 0
    before = run_digest(out)
    real_open = builtins.open

    def read_only(path, mode="r", *a, **k):
        if str(path).startswith(out) and any(c in mode for c in "wa+x"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", read_only)
    capsys.readouterr()
    assert main(["train", "--out", out, "--resume", "--set", "max_steps=4"]) == 2
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert err.count("\n") == 1 and "cannot write to run directory" in err and "Permission denied" in err, err
    assert run_digest(out) == before



TINY_CLI = ["--dataset", "synthetic", "--set", "backbone_width=4", "--set", "proj_hidden=16", "--set", "proj_dim=16",
            "--set", "pred_hidden=8", "--set", "batch_size=16", "--set", "knn_k=5", "--set", "precision=fp32",
            "--set", "probe_every=0", "--no-progress"]
# What ends a start after its run folder is made (it strikes the last thing a start does, opening
# metrics.jsonl), the exit code it must get and what it must say
LATE = {"a full disk": (lambda: OSError(errno.ENOSPC, "No space left on device"), 2, "No space left on device"),
        "Ctrl-C": (KeyboardInterrupt, 130, "interrupted"),
        "a bug": (lambda: RuntimeError("boom"), 1, "internal error: RuntimeError: boom")}


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    """A finished run of one step (copy it before changing it)."""
    from siamdyn.cli import main
    out = str(tmp_path_factory.mktemp("one_step") / "run")
    assert main(["train", "--out", out, *TINY_CLI, "--set", "max_steps=1"]) == 0
    return out


@pytest.mark.parametrize("replace", [False, True], ids=["a new run", "--overwrite of a run"])
@pytest.mark.parametrize("what", list(LATE))
def test_a_start_that_fails_late_leaves_out_as_it_was(tmp_path, capsys, monkeypatch, one_step_run, what, replace):
    """A start that fails after making its folder (lock, ckpt/, config.yaml written) leaves no
    folder, or the run --overwrite was to replace back byte-identical (run_start.RunStart)."""
    import builtins
    import shutil

    from siamdyn.cli import main
    from tests.conftest import run_digest
    out = str(tmp_path / "deep" / "run")
    if replace:
        shutil.copytree(one_step_run, out)
    before = run_digest(out) if replace else None
    make, code, said = LATE[what]
    real_open = builtins.open

    def failing(path, mode="r", *a, **k):
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            raise make()
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", failing)
    capsys.readouterr()
    assert main(["train", "--out", out, *TINY_CLI, "--set", "max_steps=2", "--set", "lr=0.1",
                 *(["--overwrite"] if replace else [])]) == code
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert said in err and "Traceback" not in err, err
    if replace:
        assert run_digest(out) == before
    else:
        assert not os.path.exists(tmp_path / "deep"), "the folders made for the run are left"


def test_a_schedule_that_cannot_be_computed_fails_before_the_run_folder_exists(tmp_path, capsys, monkeypatch):
    """The lr and tau schedules are computed at the first and last step before the folder is made,
    so an overflow there (warmup_epochs=1e308 was one, before bounds.py) is one line, not step 0's traceback."""
    import siamdyn.train_start
    from siamdyn.cli import main

    def overflow(*a, **k):
        raise OverflowError("cannot convert float infinity to integer")
    monkeypatch.setattr(siamdyn.train_start, "lr_factor", overflow)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TINY_CLI, "--set", "max_steps=2"]) == 2
    assert "the lr / tau schedule cannot be computed at step 0 (OverflowError" in capsys.readouterr().err
    assert not out.exists()


def test_a_resumable_edit_of_config_yaml_is_said_and_config_yaml_follows_the_checkpoints(tmp_path, capsys,
                                                                                         one_step_run):
    """config.yaml edited by hand in a resumable field (max_steps) after the checkpoint: the resume
    says what changed, as for --set, and config.yaml then matches the checkpoint's config digest.
    An edit of any other field is refused (tests/hostile_cases.py)."""
    import shutil

    import yaml

    from siamdyn.checkpoint import Checkpoint, config_digest
    from siamdyn.cli import main
    from siamdyn.runs import load_run_config
    out = str(tmp_path / "run")
    shutil.copytree(one_step_run, out)
    path = os.path.join(out, "config.yaml")
    doc = yaml.safe_load(open(path))
    doc["config"]["max_steps"] = 2
    open(path, "w").write(yaml.safe_dump(doc, sort_keys=False))
    capsys.readouterr()
    assert main(["train", "--out", out, "--resume", "--no-progress"]) == 0
    assert "resuming at step 1 with max_steps 1 → 2" in capsys.readouterr().err
    ckpt = Checkpoint.load_run(out)
    assert ckpt.step == 2 and ckpt.config_digest == config_digest(load_run_config(out).to_dict())


def test_overwrite_refuses_while_a_killed_replace_still_holds_the_old_run(tmp_path, capsys, one_step_run):
    """A start SIGKILLed mid-`--overwrite` leaves the old run in .replaced-run; the next --overwrite
    must not replace (or delete) it: one line, and the folder as it was."""
    import shutil

    from siamdyn.cli import main
    from siamdyn.run_start import ASIDE
    from tests.conftest import run_digest
    out = str(tmp_path / "run")
    shutil.copytree(one_step_run, out)
    shutil.copytree(os.path.join(one_step_run, "ckpt"), os.path.join(out, ASIDE, "ckpt"))
    before = run_digest(out)
    capsys.readouterr()
    assert main(["train", "--out", out, *TINY_CLI, "--set", "max_steps=2", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ASIDE in err and "Traceback" not in err, err
    assert run_digest(out) == before
