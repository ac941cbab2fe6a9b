"""One checkpoint type: weights_only files, resume from format 1 (siamdyn 0.1), export of the backbone."""
import os
import shutil

import pytest
import torch

from siamdyn.checkpoint import FORMAT, Checkpoint
from siamdyn.cli import main
from siamdyn.config import Config
from siamdyn.methods import SiameseMethod
from siamdyn.models import ResNet18
from siamdyn.optim import build_optimizer
from siamdyn.runs import load_run_config, read_metrics
from siamdyn.train import train
from tests.conftest import TINY

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy_byol_run")  # written by siamdyn 0.1 at step 5 of 36


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    train(Config.from_preset("byol", {**TINY, "max_steps": 4, "knn_every": 0}), str(out), progress=False)
    return out


def test_a_checkpoint_loads_with_weights_only(tiny_run):
    raw = torch.load(tiny_run / "ckpt" / "last.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["step"] == 4 and "target_backbone.stem.0.weight" in raw["model"]
    ckpt = Checkpoint.load_run(str(tiny_run))
    assert ckpt.probes.keys() >= {"collapse_step", "collapse_reason", "streak"}


def test_a_checkpoint_from_a_newer_siamdyn_is_refused(tiny_run, tmp_path):
    raw = torch.load(tiny_run / "ckpt" / "last.pt", weights_only=True)
    torch.save({**raw, "format": FORMAT + 1}, tmp_path / "new.pt")
    with pytest.raises(Exception, match="newer than this siamdyn reads"):
        Checkpoint.load(str(tmp_path / "new.pt"))


def test_a_run_written_by_siamdyn_0_1_resumes(tmp_path):
    run = tmp_path / "legacy"
    shutil.copytree(LEGACY, run)
    legacy = Checkpoint.load_run(str(run))
    assert legacy.step == 5 and legacy.probes["collapse_step"] is None
    cfg = load_run_config(str(run))
    model = SiameseMethod(cfg, 1)
    legacy.restore(model, build_optimizer(model, cfg), torch.Generator())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in legacy.model.items())
    summary = train(cfg.replace(max_steps=0), str(run), resume=True, progress=False)
    assert summary["steps"] == 36
    steps = [r["step"] for r in read_metrics(str(run)) if "loss" in r]
    assert steps == list(range(1, 37))  # each step once: the old lines up to 5, the new ones after
    notes = [r for r in read_metrics(str(run)) if "resume_changes" in r]
    assert notes == [{"step": 5, "resume_changes": {"max_steps": [5, 0]}}]  # the schedule change is on record
    assert torch.load(run / "ckpt" / "last.pt", weights_only=True)["format"] == FORMAT


def test_export_writes_a_plain_backbone_state_dict(tiny_run, tmp_path, capsys):
    out = tmp_path / "backbone.pt"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ResNet18(width=4, in_channels=1)" in printed and "weights_only=True" in printed
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith(("backbone.", "projector", "target")) for k in state)
    backbone = ResNet18(width=4, in_channels=1)
    backbone.load_state_dict(state)  # strict: every key and shape matches
    trained = SiameseMethod(load_run_config(str(tiny_run)), 1)
    trained.load_state_dict(Checkpoint.load_run(str(tiny_run)).model)
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(backbone.eval()(x), trained.backbone.eval()(x))


def test_export_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a run directory" in err
