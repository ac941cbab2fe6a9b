"""End to end on small data: the real loop writes metrics, a checkpoint and resumes."""
import json
import os
import subprocess
import sys

import pytest
import torch

from siamdyn.cli import main
from siamdyn.config import Config
from siamdyn.errors import SiamdynError
from siamdyn.runs import read_metrics
from siamdyn.train import train
from tests.conftest import TINY, needs_fmnist


def test_tiny_run_writes_metrics_checkpoint_and_summary(tmp_path):
    cfg = Config.from_preset("simsiam", TINY)
    summary = train(cfg, str(tmp_path / "run"), progress=False)
    records = read_metrics(str(tmp_path / "run"))
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 600 // 32 and all("z_std" in r for r in steps)
    assert summary["final_knn_acc"] is not None and 0 <= summary["final_knn_acc"] <= 100
    ckpt = torch.load(tmp_path / "run" / "ckpt" / "last.pt", weights_only=False)
    assert ckpt["step"] == 600 // 32
    assert os.path.exists(tmp_path / "run" / "config.yaml")
    # The run dir is not overwritten by accident.
    with pytest.raises(SiamdynError, match="--overwrite"):
        train(cfg, str(tmp_path / "run"), progress=False)


def test_resume_continues_to_the_same_weights(tmp_path):
    base = dict(TINY, epochs=2, deterministic=True)
    full = train(Config.from_preset("byol", base), str(tmp_path / "full"), progress=False)
    part = Config.from_preset("byol", {**base, "max_steps": 25})
    train(part, str(tmp_path / "part"), progress=False)
    train(Config.from_preset("byol", base), str(tmp_path / "part"), resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "ckpt" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "ckpt" / "last.pt", weights_only=False)["model"]
    assert full["steps"] == 2 * (600 // 32)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_deterministic_run_leaves_determinism_as_it_found_it():
    from siamdyn.runtime import setup_torch
    setup_torch(Config(**{**TINY, "deterministic": True}))
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    setup_torch(Config(**TINY))  # the next run in this process (an experiment runs many)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)  # the user's own setting, before siamdyn's run
    setup_torch(Config(**TINY))
    assert torch.are_deterministic_algorithms_enabled()


def test_resume_rejects_an_incompatible_config(tmp_path):
    train(Config.from_preset("simsiam", {**TINY, "max_steps": 2}), str(tmp_path / "r"), progress=False)
    with pytest.raises(SiamdynError, match="incompatible config: lr"):
        train(Config.from_preset("simsiam", {**TINY, "lr": 0.5}), str(tmp_path / "r"), resume=True, progress=False)


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert main(["train", "--preset", "simsaim", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown preset 'simsaim'" in err and "did you mean 'simsiam'" in err
    assert main(["train", "--set", "tau=1.5", "--out", str(tmp_path / "x")]) == 2
    assert "tau=1.5 must be in [0, 1]" in capsys.readouterr().err
    assert main(["train", "--set", "colour=red", "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key 'colour'" in capsys.readouterr().err
    assert main(["train", "--dataset", "synthetic", "--set", "batch_size=5000", "--out", str(tmp_path / "x")]) == 2
    assert "larger than the 600 training images" in capsys.readouterr().err
    assert main(["train", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_console_script_runs_as_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "siamdyn", "train", "--preset", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown preset" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
@needs_fmnist
def test_fashion_mnist_slice_end_to_end(tmp_path):
    """The real data through the CLI: a few steps of SimSiam on a 512-image slice."""
    code = main(["train", "--preset", "simsiam", "--limit", "512", "--out", str(tmp_path / "fm"), "--no-progress",
                 "--set", "max_steps=6", "--set", "batch_size=64", "--set", "test_limit=500",
                 "--set", "backbone_width=8"])
    assert code == 0
    summary = json.loads((tmp_path / "fm" / "summary.json").read_text())
    assert summary["steps"] == 6 and 10 <= summary["final_knn_acc"] <= 100


def test_demo_pipeline_on_synthetic_data(tmp_path):
    """The demo's real code path (two runs from one init, baseline, plots, report) on tiny data."""
    from siamdyn.demo import render_table, run_demo
    overrides = {k: v for k, v in TINY.items() if k != "epochs"}
    result = run_demo(str(tmp_path / "demo"), steps=4, progress=False, overrides=overrides)
    assert [r["method"] for r in result["rows"]] == ["simsiam", "simsiam-no-sg"]
    assert all(r["verdict"] in ("healthy", "degraded", "collapsed") for r in result["rows"])
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| simsiam-no-sg |" in report and "collapse_z_std.png" in report
    assert (tmp_path / "demo" / "plots" / "collapse_p_std.png").exists()
    assert "raw pixels" in render_table(result)
    # The report says where the trained SimSiam stands against both references, and the spread.
    knn = result["rows"][0]["knn_acc"]
    rand = result["baseline"]["random_init_kaiming_weighted_knn"]
    assert f"scores {knn:.1f} % kNN against {rand:.1f} %" in report and "between seeds" in report
    assert ("below the random-init encoder" in report) == (knn < rand)
    # Both runs started from the same weights: their first logged losses agree at step 1
    # up to the gradient terms, which only differ after the first update.
    first = [next(r["loss"] for r in read_metrics(str(tmp_path / "demo" / n)) if "loss" in r)
             for n in ("simsiam", "simsiam-no-sg")]
    assert first[0] == pytest.approx(first[1], abs=1e-6)


def test_probe_and_baseline_commands(tmp_path, capsys):
    run = str(tmp_path / "r")
    train(Config.from_preset("simsiam", {**TINY, "max_steps": 3}), run, progress=False)
    assert main(["probe", run, "--epochs", "3"]) == 0
    result = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert 0 <= result["linear_test_acc"] <= 100 and result["step"] == 3
    assert set(result["knn_weighted_by_k"]) == {"5", "20", "200"} and 0 <= result["knn5_euclidean_acc"] <= 100
    assert result["knn_weighted_by_k"]["20"] == result["knn_acc"]  # TINY's knn_k is 20: the same vote
    capsys.readouterr()
    assert main(["baseline", "--dataset", "synthetic", "--inits", "kaiming,zero", "--set", "knn_k=20",
                 "--out", str(tmp_path / "b.json")]) == 0
    base = json.loads((tmp_path / "b.json").read_text())
    # The gratings are separable from raw pixels; a zero-init encoder outputs one constant.
    assert base["raw_pixels_weighted_knn"] > 50
    assert base["random_init_zero_weighted_knn"] <= 15


def test_time_to_accuracy_reports_the_first_crossing(tmp_path):
    from siamdyn.eval import time_to_accuracy
    history = [{"step": 10, "knn_acc": 70.0, "time_s": 5.0}, {"step": 20, "knn_acc": 80.0, "time_s": 9.0},
               {"step": 30, "knn_acc": 79.0, "time_s": 14.0}, {"step": 40, "knn_acc": 86.0, "time_s": 20.0}]
    assert time_to_accuracy(history, [78.85, 85.54, 90]) == {
        "78.85": {"time_s": 9.0, "step": 20}, "85.54": {"time_s": 20.0, "step": 40}, "90": None}
    assert Config.from_preset("simsiam").knn_target_levels == [78.85, 85.54]  # the raw-pixel kNN of fmnist
    assert Config.from_preset("simsiam", {"dataset": "synthetic"}).knn_target_levels == []
    with pytest.raises(SiamdynError, match="knn_targets"):
        Config.from_preset("simsiam", {"knn_targets": "high"})
    summary = train(Config.from_preset("simsiam", {**TINY, "max_steps": 2, "knn_targets": "1,100"}),
                    str(tmp_path / "r"), progress=False)
    assert summary["time_to_knn"]["1"]["step"] == 2 and summary["time_to_knn"]["100"] is None


def test_train_applies_the_fmnist_recipe_under_the_users_settings():
    """`siamdyn train` on Fashion-MNIST = preset + FMNIST_RECIPE[preset] + the user's flags;
    other data and --paper-recipe get the preset alone; Config.from_preset never changes."""
    from siamdyn.cli import _config_from_args, build_parser
    from siamdyn.presets import FMNIST_RECIPE
    assert FMNIST_RECIPE.get("simsiam"), "the simsiam recipe is defined"
    parse = lambda *a: build_parser().parse_args(["train", *a])  # noqa: E731
    for preset, recipe in FMNIST_RECIPE.items():
        cfg = _config_from_args(parse("--preset", preset), recipe=True)
        assert all(getattr(cfg, k) == v for k, v in recipe.items())
        paper = Config.from_preset(preset)
        assert _config_from_args(parse("--preset", preset), recipe=False) == paper
        assert _config_from_args(parse("--preset", preset, "--dataset", "synthetic"), recipe=True) == \
            Config.from_preset(preset, {"dataset": "synthetic"})
    key, value = next(iter(FMNIST_RECIPE["simsiam"].items()))
    other = {str: "x", float: 0.123, int: 7, bool: True}[type(value)] if key != "optimizer" else "sgd"
    cfg = _config_from_args(parse("--set", f"{key}={other}"), recipe=True)
    assert getattr(cfg, key) == other  # the user's --set wins over the recipe


def test_preset_and_config_file_compose_and_the_recipe_does_not_depend_on_how_the_preset_is_named(tmp_path, capsys):
    from siamdyn.cli import _config_from_args, build_parser
    parse = lambda *a: build_parser().parse_args(["train", *a])  # noqa: E731
    (tmp_path / "lr.yaml").write_text("lr: 0.1\n")
    (tmp_path / "simsiam.yaml").write_text("preset: simsiam\n")
    cfg = _config_from_args(parse("--preset", "byol", "--config", str(tmp_path / "lr.yaml")), recipe=True)
    assert cfg.preset == "byol" and cfg.target == "ema" and cfg.lr == 0.1  # the file's value over BYOL's recipe
    by_file = _config_from_args(parse("--config", str(tmp_path / "simsiam.yaml")), recipe=True)
    assert by_file == _config_from_args(parse("--preset", "simsiam"), recipe=True)  # same recipe either way
    assert main(["train", "--preset", "byol", "--config", str(tmp_path / "simsiam.yaml"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "says preset: simsiam; drop one of them" in capsys.readouterr().err
    (tmp_path / "five.yaml").write_text("config: 5\n")
    assert main(["train", "--config", str(tmp_path / "five.yaml"), "--out", str(tmp_path / "y")]) == 2
    assert "must hold a mapping" in capsys.readouterr().err


def test_tensorboard_mirrors_the_metrics_and_a_resume_purges_what_a_killed_run_logged(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter
    run = str(tmp_path / "run")
    base = dict(TINY, epochs=1, tensorboard=True)
    train(Config.from_preset("simsiam", {**base, "max_steps": 8}), run, progress=False)
    # As if the run had gone on to step 9, logged it, and been killed before its next checkpoint.
    with SummaryWriter(os.path.join(run, "tensorboard")) as w:
        w.add_scalar("loss", 999.0, 9)
    train(Config.from_preset("simsiam", base), run, resume=True, progress=False)
    events = EventAccumulator(os.path.join(run, "tensorboard"))
    events.Reload()
    logged = {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}
    mirrored = {e.step: e.value for e in events.Scalars("loss")}
    assert [e.step for e in events.Scalars("loss")] == sorted(logged) == list(range(1, 600 // 32 + 1))
    assert all(abs(mirrored[k] - logged[k]) < 1e-6 * max(1, abs(logged[k])) for k in logged)
    assert "z_std" in events.Tags()["scalars"]
    # --overwrite starts the events afresh too.
    train(Config.from_preset("simsiam", {**base, "max_steps": 3}), run, overwrite=True, progress=False)
    events = EventAccumulator(os.path.join(run, "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3]


def test_tensorboard_without_the_package_is_a_one_line_error_before_the_run_starts(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(SiamdynError, match=r"pip install 'siamdyn\[tensorboard\]'"):
        train(Config.from_preset("simsiam", dict(TINY, tensorboard=True)), str(tmp_path / "r"), progress=False)
    assert not os.path.exists(tmp_path / "r")
