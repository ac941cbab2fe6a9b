"""The public API in a loop that is not siamdyn's: any backbone, the collapse monitor, the
gradient split over caller-named groups, module speeds; and the example script that uses them."""
import copy
import importlib.util
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import siamdyn
from siamdyn import CollapseMonitor, Config, ModuleSpeeds, SiameseMethod, gradient_split, split_gradient
from siamdyn.errors import ConfigError
from tests.conftest import needs_fmnist

HEADS = {"proj_hidden": 32, "proj_dim": 32, "pred_hidden": 8}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _views(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, 12, 12, generator=g), torch.randn(n, 1, 12, 12, generator=g)]


def test_the_package_exports_its_api():
    for name in siamdyn.__all__:
        assert hasattr(siamdyn, name), name


def test_a_foreign_backbone_keeps_its_weights_and_its_groups():
    torch.manual_seed(0)
    cnn = _cnn()
    before = copy.deepcopy(cnn.state_dict())
    groups = {"conv1": cnn[0:3], "conv2": cnn[3:6]}
    method = SiameseMethod(Config.from_preset("simsiam", HEADS), backbone=cnn, feature_dim=16, groups=groups)
    assert all(torch.equal(v, method.backbone.state_dict()[k]) for k, v in before.items())  # not re-initialised
    assert list(method.module_groups()) == ["conv1", "conv2", "projector", "predictor"]
    out = method(_views())
    out.loss.backward()
    assert torch.isfinite(out.loss) and cnn[0].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="feature_dim"):
        SiameseMethod(Config.from_preset("simsiam", HEADS), backbone=_cnn())


def test_split_gradient_of_a_hand_written_simsiam_equals_the_method_split():
    """A user's own SimSiam (their losses, their detach calls) gets the same g1/g2 as siamdyn's."""
    torch.manual_seed(0)
    method = SiameseMethod(Config.from_preset("simsiam", HEADS), backbone=_cnn(), feature_dim=16)
    views = _views()
    ours = gradient_split(method, views)
    (f1, f2) = (method.backbone(v) for v in views)
    z1, z2 = method.projector(f1), method.projector(f2)
    h = method.predictor

    def d(p, z):
        return -F.cosine_similarity(p, z, dim=1).mean()
    term1 = 0.5 * (d(h(z1), z2.detach()) + d(h(z2), z1.detach()))
    term2 = 0.5 * (d(h(z1.detach()), z2) + d(h(z2.detach()), z1))
    theirs = split_gradient(term1, term2, {"backbone": method.backbone, "projector": method.projector})
    for key in ("g1_norm", "g2_norm", "cos_g1_g2", "g1_norm/backbone", "g2_norm/projector"):
        assert theirs[key] == pytest.approx(ours[key], rel=1e-4, abs=1e-6), key
    assert ours["g1_norm/backbone"] > 0 and ours["g2_norm/backbone"] > 0


def test_module_speeds_over_named_groups():
    cnn = _cnn()
    speeds = ModuleSpeeds({"first": cnn[0:3], "last": [cnn[3].weight]})
    speeds.snapshot()
    with torch.no_grad():
        cnn[3].weight.mul_(1.1)
    moved = speeds.measure()
    assert moved["speed/first"] == 0.0 and moved["speed/last"] == pytest.approx(0.1, rel=1e-5)


def test_collapse_monitor_dates_a_collapse_and_keeps_healthy_runs_healthy():
    g = torch.Generator().manual_seed(0)
    healthy = CollapseMonitor(dim=32, patience=3)
    for step in range(10):
        healthy.update(step, [torch.randn(256, 32, generator=g), torch.randn(256, 32, generator=g)])
    assert not healthy.collapsed and healthy.last["z_erank"] > 20
    monitor = CollapseMonitor(dim=32, patience=3)
    constant = torch.ones(256, 32) + 1e-5 * torch.randn(256, 32, generator=g)
    for step in range(1, 10):
        z = torch.randn(256, 32, generator=g) if step < 4 else constant
        monitor.update(step, z, p=z)
        assert monitor.fired == (step == 6)  # collapsed from step 4, held 3 steps
    assert monitor.collapse_step == 4 and "std" in monitor.reason
    assert "cos_views" not in monitor.last  # one view: the cross-view numbers are left out
    resumed = CollapseMonitor(dim=32, patience=3)
    resumed.load_state_dict(monitor.state_dict())
    assert resumed.collapsed and resumed.collapse_step == 4 and resumed.reason == monitor.reason


def test_collapse_monitor_resumes_mid_streak():
    g = torch.Generator().manual_seed(0)
    constant = torch.ones(64, 16)
    first = CollapseMonitor(dim=16, patience=4)
    for step in (1, 2):
        first.update(step, constant + 1e-6 * torch.randn(64, 16, generator=g))
    second = CollapseMonitor(dim=16, patience=4)
    second.load_state_dict(first.state_dict())
    fired = []
    for step in (3, 4):
        second.update(step, constant)
        fired.append(second.fired)
    assert second.collapse_step == 1 and fired == [False, True]


def test_a_loss_added_to_the_registry_is_a_config_value(monkeypatch):
    """Adding a loss is one entry in methods/losses.py: the config and the method pick it up."""
    from siamdyn.methods import losses

    class Euclidean(nn.Module):
        def forward(self, p, t):
            return (p - t).pow(2).sum(1).mean()
    monkeypatch.setitem(losses.LOSSES, "euclidean", lambda cfg: Euclidean())
    cfg = Config.from_preset("simsiam", {**HEADS, "loss": "euclidean"})
    method = SiameseMethod(cfg, backbone=_cnn(), feature_dim=16)
    assert isinstance(method.pair_loss, Euclidean) and torch.isfinite(method(_views()).loss)
    with pytest.raises(ConfigError, match="choose one of"):
        Config.from_preset("simsiam", {"loss": "vicreg"})


@needs_fmnist
def test_the_example_trains_a_foreign_backbone_on_fashion_mnist():
    spec = importlib.util.spec_from_file_location("own_loop", os.path.join(ROOT, "examples", "own_loop.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    history = example.main(["--steps", "25", "--limit", "1000", "--batch", "64"])
    assert len(history) == 25
    assert history[-1]["loss"] < history[0]["loss"]  # SimSiam's loss falls from ≈ 0 as the predictor fits
    assert all(k in history[0] for k in ("g1_norm/block1", "g2_norm/block3", "speed/predictor", "z_erank", "p_std"))
    assert all(r["speed/block1"] > 0 for r in history)
