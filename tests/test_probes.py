"""Instruments: the gradient split, module speeds, RankMe, and probes that change nothing."""
import pytest
import torch

from siamdyn.config import Config
from siamdyn.methods import SiameseMethod
from siamdyn.probes.collapse import effective_rank, normalized_std
from siamdyn.probes.gradients import gradient_split, module_speeds, snapshot
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
    return torch.cat([p.grad.flatten() for m in model.encoder_groups().values() for p in m.parameters()])


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
    per_group = sum(rec[f"g1_norm/{n}"] ** 2 for n in model.encoder_groups()) ** 0.5
    assert per_group == pytest.approx(rec["g1_norm"], rel=1e-4)
    assert rec["dl_dp_norm"] > 0


def test_split_with_an_xbar_target_matches_two_separate_forward_passes():
    """The split shares one encoder pass between its two terms; the x̄ target (eq. 10) is made per term."""
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset("xbar", {**TINY, "mean_views": 2}), 1)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(16, 1, 16, 16, generator=g) for _ in range(2)]
    xbar = torch.stack(views).mean(0)
    rec = gradient_split(model, views, xbar)
    norms = []
    for grad_terms in ("predictor_branch", "target_branch"):
        model.zero_grad(set_to_none=True)
        model(views, xbar, grad_terms=grad_terms).loss.backward()
        grads = [p.grad for m in model.encoder_groups().values() for p in m.parameters() if p.grad is not None]
        norms.append(float(torch.cat([g.flatten() for g in grads]).norm()))
    assert rec["g1_norm"] == pytest.approx(norms[0], rel=1e-5) and rec["g2_norm"] == pytest.approx(norms[1], rel=1e-5)
    assert norms[1] > 0


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
    assert float(effective_rank(torch.ones(50, 8))) == pytest.approx(1.0, abs=1e-3)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
    assert float(effective_rank(q[:, :5] * 3)) == pytest.approx(5.0, rel=1e-3)  # 5 equal singular values
    assert 1.0 < float(effective_rank(torch.randn(100, 20))) <= 20.0
    # The Gram-eigenvalue route equals RankMe's SVD definition, wide or tall, full rank or not.
    for x in (torch.randn(64, 200), torch.randn(300, 40), torch.randn(128, 6) @ torch.randn(6, 90)):
        s = torch.linalg.svdvals(x.double())
        p = s / s.sum()
        assert float(effective_rank(x)) == pytest.approx(float(torch.exp(-(p * p.clamp(min=1e-30).log()).sum())),
                                                         rel=1e-4)


def test_normalized_std_healthy_and_collapsed():
    healthy = torch.randn(4096, 64)
    assert float(normalized_std(healthy)[0]) * 64 ** 0.5 == pytest.approx(1.0, abs=0.05)
    collapsed = torch.ones(256, 64) + 1e-4 * torch.randn(256, 64)
    assert normalized_std(collapsed)[0] < 1e-3


def test_probes_do_not_change_the_trajectory(tmp_path):
    weights = []
    for every in (0, 2):  # every 2: gradient split, module speeds, the first 2 steps, the held-out batch
        cfg = Config.from_preset("simsiam", {**TINY, "max_steps": 6, "probe_every": every, "deterministic": True,
                                             "probe_first": every, "heldout_every": every, "heldout_images": 64})
        train(cfg, str(tmp_path / f"p{every}"), progress=False)
        weights.append(torch.load(tmp_path / f"p{every}" / "ckpt" / "last.pt", weights_only=False)["model"])
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    probes = [r for r in read_metrics(str(tmp_path / "p2")) if "g1_norm" in r]
    assert [r["step"] for r in probes] == [1, 2, 3, 5]
    heldout = [r for r in read_metrics(str(tmp_path / "p2")) if "heldout/z_erank" in r]
    assert [r["step"] for r in heldout] == [0, 2, 4, 6]  # the random-init reading, then every 2 steps
    assert all(1 <= r["heldout/p_erank"] <= 32 and 0 <= r["heldout/z_abs_cos"] <= 1 for r in heldout)
    assert all(1 <= r["heldout/proj_hidden_erank"] <= 32 for r in heldout)  # the third depth: projector hidden
    assert all("speed/predictor" in r and "g2_over_g1/stem" in r for r in probes)
    from siamdyn.plots import plot_runs
    paths = plot_runs([str(tmp_path / "p0"), str(tmp_path / "p2")], str(tmp_path / "plots"), proj_dim=32)
    names = {p.rsplit("/", 1)[-1] for p in paths}
    assert {"gradient_split.png", "module_speeds.png", "collapse_z_std.png", "loss.png", "alignment_uniformity.png",
            "cosines.png", "effective_rank_features.png"} <= names


def test_heldout_reads_the_projector_hidden_layer_exactly():
    """The hidden-layer depth is the input of the projector's last Linear: for SimSiam's projector
    the output of its second ReLU, and nothing for a projector with a single Linear."""
    import torch.nn as nn

    from siamdyn.methods import SiameseMethod
    from siamdyn.probes.collapse import effective_rank
    from siamdyn.probes.heldout import HeldoutProbe, projector_last_linear
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset("simsiam", TINY), 1)
    images = torch.randint(0, 256, (48, 1, 16, 16), dtype=torch.uint8)
    prepare = lambda x: x.float() / 255  # noqa: E731
    reading = HeldoutProbe(model, images, prepare, every=1).read(0)
    with torch.no_grad():
        hidden = model.projector[:6](model.backbone(prepare(images)))  # Linear, BN, ReLU, Linear, BN, ReLU
    assert reading["heldout/proj_hidden_erank"] == pytest.approx(float(effective_rank(hidden)), rel=1e-4)
    assert projector_last_linear(nn.Sequential(nn.Linear(4, 4))) is None


def test_alignment_uniformity_and_cosines_on_known_embeddings():
    from siamdyn.probes.collapse import alignment, mean_cosines, uniformity
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(512, 64, generator=g)
    same = torch.ones(512, 64)
    assert float(alignment(spread, spread)) == pytest.approx(0.0, abs=1e-6)
    assert float(alignment(spread, -spread)) == pytest.approx(4.0, rel=1e-5)  # antipodal unit vectors
    assert float(uniformity(same)) == pytest.approx(0.0, abs=1e-5)
    # Random unit vectors in 64-d: ‖ẑi − ẑj‖² ≈ 2, so uniformity ≈ −4 (+ a small spread term).
    assert -4.0 < float(uniformity(spread)) < -3.5
    cos_views, cos_images = map(float, mean_cosines(spread, spread + 0.01 * torch.randn(512, 64, generator=g)))
    assert cos_views > 0.99 and abs(cos_images) < 0.02
    assert tuple(map(float, mean_cosines(same, same))) == pytest.approx((1.0, 1.0), abs=1e-5)


def _metrics(std, rank, p_std=None):
    return {"z_std": std, "p_std": std if p_std is None else p_std, "z_erank": rank}


def test_collapse_detector_fires_once_on_a_collapsing_sequence_and_never_on_a_healthy_one():
    from siamdyn.probes.collapse import CollapseDetector
    d = 64
    healthy = CollapseDetector(d)
    assert not any(healthy.update(s, _metrics(0.9 / 8 + 0.01 * (s % 3), 30.0 - s % 5)) for s in range(1, 200))
    assert healthy.step is None
    falling = CollapseDetector(d)  # patience 1: the first step below
    fired = [falling.update(s, _metrics(0.125 * 0.97 ** s, 40.0)) for s in range(1, 200)]
    assert fired.count(True) == 1
    first = fired.index(True) + 1  # 0.125·0.97^s < 0.25/8 first at s = 46
    assert first == 46 and falling.step == 46 and "std" in falling.reason
    p_only = CollapseDetector(d)  # z held up by the projector's BN, p gone: still collapse
    assert p_only.update(7, _metrics(0.1, 20.0, p_std=0.001)) and p_only.step == 7
    rank = CollapseDetector(d)
    assert rank.update(3, _metrics(0.12, 1.3)) and "RankMe" in rank.reason
    assert not CollapseDetector(d, rank_floor=0).update(3, _metrics(0.12, 1.3))


def test_collapse_detector_with_patience_ignores_a_dip_and_dates_a_sustained_collapse():
    from siamdyn.probes.collapse import CollapseDetector
    d, low, ok = 64, 0.02, 0.1  # threshold 0.25/8 = 0.03125
    dip = CollapseDetector(d, patience=10)  # 9 steps below, then recovery (BYOL's early dip)
    seq = [ok] * 5 + [low] * 9 + [ok] * 50
    assert not any(dip.update(s, _metrics(v, 20.0)) for s, v in enumerate(seq, 1)) and dip.step is None
    sustained = CollapseDetector(d, patience=10)
    seq = [ok] * 5 + [low] * 3 + [ok] + [low] * 30
    fired = [sustained.update(s, _metrics(v, 20.0)) for s, v in enumerate(seq, 1)]
    assert fired.index(True) + 1 == 19 and sustained.step == 10 and "held 10 steps" in sustained.reason


def test_predictor_spectrum_alignment_is_one_when_eigenvectors_are_shared():
    from siamdyn.probes.spectrum import predictor_spectrum
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    scales = torch.linspace(3, 0.5, 16)
    z = torch.randn(4096, 16, generator=g) * scales @ q.T  # F ≈ Q diag(scales²) Qᵀ
    shared = predictor_spectrum(q @ torch.diag(scales.sqrt()) @ q.T, z, top=4)  # DirectPred: W_p = F^{1/2}
    assert shared["pred_eig_alignment"] > 0.98
    assert shared["pred_asymmetry"] < 1e-5
    assert shared["pred_eigs"] == pytest.approx(scales.sqrt()[:4].tolist(), rel=1e-4)
    assert shared["z_corr_eigs"][0] == pytest.approx(9.0, rel=0.1)
    other = predictor_spectrum(torch.randn(16, 16, generator=g), z, top=4)
    assert other["pred_eig_alignment"] < 0.9 and other["pred_asymmetry"] > 0.5


def test_linear_predictor_run_logs_the_spectrum_and_stop_on_collapse_ends_the_run(tmp_path):
    cfg = Config.from_preset("simsiam", {**TINY, "max_steps": 4, "probe_every": 2, "predictor": "linear"})
    train(cfg, str(tmp_path / "lin"), progress=False)
    probes = [r for r in read_metrics(str(tmp_path / "lin")) if "pred_eigs" in r]
    assert [r["step"] for r in probes] == [1, 3] and len(probes[0]["pred_eigs"]) == 8
    steps = [r for r in read_metrics(str(tmp_path / "lin")) if "alignment" in r]
    assert all(-4.5 < r["uniformity"] <= 0 and r["feature_erank"] >= 1 for r in steps)
    from siamdyn.plots import plot_runs
    assert any(p.endswith("predictor_spectrum.png") for p in plot_runs([str(tmp_path / "lin")], str(tmp_path / "pl")))
    # An impossible rank floor makes the detector fire on the first step; the run then
    # stops there, with a checkpoint and a final kNN.
    cfg = cfg.replace(collapse_rank_floor=1e6, collapse_patience=1, stop_on_collapse=True)
    summary = train(cfg, str(tmp_path / "stop"), progress=False)
    assert summary["stopped_on_collapse"] and summary["collapse_step"] == 1 and summary["steps"] == 1
    assert summary["final_knn_acc"] is not None
    assert torch.load(tmp_path / "stop" / "ckpt" / "last.pt", weights_only=False)["step"] == 1


def test_heldout_readings_see_a_collapse_that_batchnorm_hides():
    """z = s·u (one direction, signs ±, what an affine-free BN leaves of a collapse) has a
    per-dimension std near the healthy value but |cos| = 1 and RankMe 1; spread data does not."""
    from siamdyn.probes.heldout import representation_stats
    g = torch.Generator().manual_seed(0)
    s = torch.randn(500, 1, generator=g)
    line = torch.nn.functional.batch_norm(s * torch.randn(1, 64, generator=g), None, None, training=True)
    collapsed = {k.split("/")[-1]: float(v) for k, v in representation_stats(line, "x/z").items()}
    spread = {k.split("/")[-1]: float(v) for k, v in representation_stats(torch.randn(500, 64, generator=g),
                                                                         "x/z").items()}
    assert collapsed["z_abs_cos"] == pytest.approx(1.0, abs=1e-4) and collapsed["z_erank"] == pytest.approx(1, abs=0.01)
    assert spread["z_abs_cos"] < 0.2 and spread["z_erank"] > 40 and spread["z_center_norm"] < 0.1

