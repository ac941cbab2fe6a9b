"""Misuse of the public API ends in one line that names the fix, or a warning where the
input is legal but probably wrong: each case on a real tiny model."""
import json
import warnings

import pytest
import torch
import torch.nn as nn

from siamdyn import CollapseMonitor, Config, ModuleSpeeds, SiameseMethod, collapse_metrics, gradient_split
from siamdyn.errors import ConfigError

HEADS = {"proj_hidden": 32, "proj_dim": 32, "pred_hidden": 8}


def _cnn() -> nn.Sequential:
    """16-d features; 1296 trainable parameters, 1200 of them in [3:6]."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _method(backbone: nn.Module | None = None, feature_dim: int = 16, **kw) -> SiameseMethod:
    torch.manual_seed(0)
    return SiameseMethod(Config.from_preset("simsiam", HEADS), backbone=backbone or _cnn(), feature_dim=feature_dim,
                         **kw)


def _views(n: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, 1, 12, 12, generator=g), torch.randn(n, 1, 12, 12, generator=g)]


def test_a_monitor_of_another_width_names_both_dims():
    out = _method()(_views())  # z and p are 32-d
    with pytest.raises(ValueError, match=r"CollapseMonitor\(dim=64\) got z of dimension 32: "
                                         r".*CollapseMonitor\(dim=32\)"):
        CollapseMonitor(dim=64).update(0, out.z, p=out.p)
    with pytest.raises(ValueError, match=r"got p of dimension 64"):
        CollapseMonitor(dim=32).update(0, out.z, p=torch.randn(8, 64))
    assert CollapseMonitor(dim=32).update(0, out.z, p=out.p)["z_std"] > 0


def test_groups_that_miss_part_of_the_backbone_warn_with_the_count():
    cnn = _cnn()
    left = sum(p.numel() for p in cnn[3:6].parameters())
    with pytest.warns(UserWarning, match=f"groups leave {left} of the 1296 trainable parameters of the backbone"):
        method = _method(cnn, groups={"conv1": cnn[0:3]})
    views = _views()
    with pytest.warns(UserWarning, match=f"groups leave {left} of the .* backbone and projector"):
        split = gradient_split(method, views, groups={"conv1": cnn[0:3], "projector": method.projector})
    assert split["g1_norm/conv1"] > 0
    speeds = ModuleSpeeds(method.module_groups())  # still usable: the warning does not stop the run
    speeds.snapshot()
    method(views).loss.backward()
    torch.optim.SGD(method.parameters(), lr=0.1).step()
    assert speeds.measure()["speed/conv1"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # groups that hold the whole backbone: no warning
        full = _method(cnn, groups={"conv1": cnn[0:3], "conv2": cnn[3:6]})
        gradient_split(full, views, groups=full.encoder_groups())


def test_a_group_from_another_model_is_an_error():
    cnn, other = _cnn(), _cnn()
    with pytest.raises(ConfigError, match="group 'conv2' holds parameters that are not part of the backbone"):
        _method(cnn, groups={"conv1": cnn[0:3], "conv2": other[3:6]})
    with pytest.raises(ConfigError, match="group 'x' holds parameters that are not part of the model"):
        gradient_split(_method(cnn), _views(), groups={"x": other})


class _WithAux(nn.Module):
    """A backbone with an auxiliary head its forward never uses: that group gets no gradient."""

    def __init__(self):
        super().__init__()
        self.body, self.aux = _cnn(), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_group_without_gradient_logs_null_not_inf():
    backbone = _WithAux()
    method = _method(backbone, groups={"body": backbone.body, "aux": backbone.aux})
    split = gradient_split(method, _views())
    assert split["g1_norm/aux"] == 0.0 and split["g2_over_g1/aux"] is None
    assert split["g2_over_g1/body"] > 0 and split["g2_over_g1"] > 0
    assert json.loads(json.dumps(split, allow_nan=False))["g2_over_g1/aux"] is None  # valid JSON


def test_one_view_is_a_clear_error():
    method, views = _method(), _views()
    with pytest.raises(ValueError, match=r"needs at least 2 views of each image, .*; got 1$"):
        method([views[0]])
    with pytest.raises(ValueError, match=r"got one tensor of shape \(8, 1, 12, 12\)"):
        method(views[0])
    method(views).loss.backward()  # two views: fine


class _Tokens(nn.Module):
    """A transformer-like backbone: (N, T, D) tokens, not one vector per image."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(12, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x.flatten(1, 2))  # (N, 1, 12, 12) → (N, 12 tokens, 16)


def test_backbone_features_of_the_wrong_shape_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(N, feature_dim\) = \(N, 32\); the backbone returned \(8, 16\): "
                                         r"pass feature_dim=16"):
        _method(feature_dim=32)(_views())
    with pytest.raises(ValueError, match=r"\(N, 16\); the backbone returned \(8, 12, 16\): pool .*tokens"):
        _method(_Tokens(), feature_dim=16)(_views())


def test_a_batch_of_one_is_a_clear_error():
    out = _method()(_views())
    one = [z[:1] for z in out.z]
    with pytest.raises(ValueError, match=r"at least 2 samples per batch .* got z of shape \(1, 32\)"):
        CollapseMonitor(dim=32).update(0, one)
    with pytest.raises(ValueError, match="at least 2 samples"):
        collapse_metrics(one[0])


def test_gradient_split_of_a_plain_module_says_what_it_needs():
    with pytest.raises(TypeError, match=r"gradient_split needs a SiameseMethod .* got Sequential; .*split_gradient"):
        gradient_split(_cnn(), _views())


def test_speeds_measured_before_a_snapshot_say_what_to_call_first():
    """It used to return {}: a run logging speeds would silently log none."""
    speeds = ModuleSpeeds({"conv": _cnn()})
    with pytest.raises(RuntimeError, match=r"measure\(\) before snapshot\(\)"):
        speeds.measure()
