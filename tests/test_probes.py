"""Instruments: the gradient split, module speeds, RankMe, and probes that change nothing."""
import pytest
import torch

from siamdyn.config import Config
from siamdyn.methods import SiameseMethod
from siamdyn.probes.collapse import effective_rank, normalized_std
from siamdyn.probes.gradients import ENCODER_GROUPS, gradient_split, module_speeds, snapshot
from siamdyn.runs import read_metrics
from siamdyn.train import train
from tests.conftest import TINY


def _model_and_views(preset="simsiam"):
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset(preset, TINY), 1)
    g = torch.Generator().manual_seed(1)
    return model, [torch.randn(16, 1, 16, 16, generator=g), torch.randn(16, 1, 16, 16, generator=g)]


def _encoder_grad(model, views, grad_terms):
    model.zero_grad(set_to_none=True)
    model(views, grad_terms=grad_terms).loss.backward()
    return torch.cat([model.module_groups()[n].get_parameter(k).grad.flatten()
                      for n in ENCODER_GROUPS for k, _ in model.module_groups()[n].named_parameters()])


def test_split_matches_separate_autograd_and_adds_up_to_both():
    model, views = _model_and_views()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rec = gradient_split(model, views)
    for k, v in model.named_buffers():  # BN statistics restored
        assert torch.equal(v, buffers[k]), k
    g1 = _encoder_grad(model, views, "predictor_branch")
    g2 = _encoder_grad(model, views, "target_branch")
    both = _encoder_grad(model, views, "both")
    assert rec["g1_norm"] == pytest.approx(float(g1.norm()), rel=1e-4)
    assert rec["g2_norm"] == pytest.approx(float(g2.norm()), rel=1e-4)
    assert rec["cos_g1_g2"] == pytest.approx(float(torch.nn.functional.cosine_similarity(g1, g2, dim=0)), abs=1e-4)
    torch.testing.assert_close(g1 + g2, both, atol=1e-5, rtol=1e-4)
    per_group = sum(rec[f"g1_norm/{n}"] ** 2 for n in ENCODER_GROUPS) ** 0.5
    assert per_group == pytest.approx(rec["g1_norm"], rel=1e-4)
    assert rec["dl_dp_norm"] > 0


def test_split_of_an_ema_method_measures_the_online_target():
    model, views = _model_and_views("byol")
    rec = gradient_split(model, views)
    assert rec["g2_norm"] > 0 and rec["g1_norm"] > 0


def test_module_speeds_read_one_update():
    model, views = _model_and_views()
    before = snapshot(model)
    with torch.no_grad():
        model.predictor[0].weight.mul_(1.5)  # only the predictor's first layer moves
    speeds = module_speeds(model, before)
    assert speeds["speed/predictor"] > 0 and speeds["speed/stem"] == 0.0 and speeds["speed/stage4"] == 0.0


def test_effective_rank_of_known_matrices():
    assert effective_rank(torch.ones(50, 8)) == pytest.approx(1.0, abs=1e-3)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
    assert effective_rank(q[:, :5] * 3) == pytest.approx(5.0, rel=1e-3)  # 5 equal singular values
    assert 1.0 < effective_rank(torch.randn(100, 20)) <= 20.0


def test_normalized_std_healthy_and_collapsed():
    healthy = torch.randn(4096, 64)
    assert normalized_std(healthy)[0] * 64 ** 0.5 == pytest.approx(1.0, abs=0.05)
    collapsed = torch.ones(256, 64) + 1e-4 * torch.randn(256, 64)
    assert normalized_std(collapsed)[0] < 1e-3


def test_probes_do_not_change_the_trajectory(tmp_path):
    weights = []
    for every in (0, 2):
        cfg = Config.from_preset("simsiam", {**TINY, "max_steps": 6, "probe_every": every, "deterministic": True})
        train(cfg, str(tmp_path / f"p{every}"), progress=False)
        weights.append(torch.load(tmp_path / f"p{every}" / "ckpt" / "last.pt", weights_only=False)["model"])
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    probes = [r for r in read_metrics(str(tmp_path / "p2")) if "g1_norm" in r]
    assert [r["step"] for r in probes] == [1, 3, 5]
    assert all("speed/predictor" in r and "g2_over_g1/stem" in r for r in probes)
    from siamdyn.plots import plot_runs
    paths = plot_runs([str(tmp_path / "p0"), str(tmp_path / "p2")], str(tmp_path / "plots"), proj_dim=32)
    names = {p.rsplit("/", 1)[-1] for p in paths}
    assert {"gradient_split.png", "module_speeds.png", "collapse_z_std.png", "loss.png"} <= names
