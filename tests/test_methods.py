"""Stop-gradient semantics: which gradient terms (docs/seed.md §3) reach the encoder."""
import pytest
import torch

from siamdyn.config import Config
from siamdyn.presets import PRESETS
from siamdyn.methods import SiameseMethod
from tests.conftest import TINY


def encoder_grad(grad_terms: str, preset: str = "simsiam") -> tuple[torch.Tensor, torch.Tensor, object]:
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset(preset, {**TINY, "grad_terms": grad_terms}), 1)
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(16, 1, 16, 16, generator=g), torch.randn(16, 1, 16, 16, generator=g)]
    out = model(views)
    out.loss.backward()
    enc = torch.cat([p.grad.flatten() for p in list(model.backbone.parameters()) + list(model.projector.parameters())])
    pred = torch.cat([p.grad.flatten() for p in model.predictor.parameters()])
    return enc, pred, out


def test_stop_gradient_blocks_the_target_branch():
    _, _, out = encoder_grad("predictor_branch")
    assert all(not t.requires_grad for t in out.targets)  # no gradient can flow into the targets
    for terms in ("both", "target_branch"):
        _, _, out = encoder_grad(terms)
        assert all(t.requires_grad for t in out.targets)


def test_terms_add_up_to_the_full_gradient():
    g1, p1, _ = encoder_grad("predictor_branch")
    g2, p2, _ = encoder_grad("target_branch")
    g12, p12, _ = encoder_grad("both")
    assert g1.norm() > 0 and g2.norm() > 0
    torch.testing.assert_close(g1 + g2, g12, atol=1e-5, rtol=1e-4)
    # The predictor learns the same way whichever terms reach the encoder.
    torch.testing.assert_close(p1, p2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(p1, p12, atol=1e-6, rtol=1e-5)


def test_ema_target_gets_no_gradient_and_starts_equal():
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset("byol", TINY), 1)
    for a, b in zip(model.backbone.parameters(), model.target_backbone.parameters()):
        assert torch.equal(a, b) and not b.requires_grad
    out = model([torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)])
    out.loss.backward()
    assert all(p.grad is None for p in model.target_backbone.parameters())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_gives_a_finite_loss_and_gradient(preset):
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset(preset, TINY), 1)
    views = [torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)]
    out = model(views, xbar=torch.randn(8, 1, 16, 16))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_param_groups_carry_fixed_lr_and_scale():
    cfg = Config.from_preset("simsiam", {**TINY, "predictor_lr_scale": 10.0})
    groups = {g["name"]: g for g in SiameseMethod(cfg, 1).param_groups()}
    assert groups["predictor"]["fixed_lr"] is True and groups["predictor"]["lr_scale"] == 10.0
    assert groups["encoder"]["fixed_lr"] is False
    assert "predictor" not in {g["name"] for g in SiameseMethod(Config.from_preset("siamese", TINY), 1).param_groups()}


@pytest.mark.parametrize("preset", ["simsiam", "byol"])
def test_fused_views_equal_separate_passes_when_bn_statistics_coincide(preset):
    """fuse_views only pools BatchNorm statistics over the views: with running statistics
    (eval mode) the loss and every gradient equal the per-view passes; in train mode on two
    different views they differ (so the flag really changes something)."""
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(16, 1, 16, 16, generator=g), torch.randn(16, 1, 16, 16, generator=g)]
    results = {}
    for fuse in (False, True):
        for train_mode in (False, True):
            torch.manual_seed(0)
            model = SiameseMethod(Config.from_preset(preset, {**TINY, "fuse_views": fuse}), 1).train(train_mode)
            out = model(views)
            out.loss.backward()
            results[fuse, train_mode] = (out.loss.detach(),
                                         torch.cat([p.grad.flatten() for p in model.backbone.parameters()]))
    torch.testing.assert_close(results[True, False][0], results[False, False][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results[True, False][1], results[False, False][1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(results[True, True][0], results[False, True][0])


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "adamw"])
def test_every_optimizer_takes_a_finite_step_that_lowers_the_loss_on_one_batch(optimizer):
    from siamdyn.optim import build_optimizer
    torch.manual_seed(0)
    cfg = Config.from_preset("simsiam", {**TINY, "optimizer": optimizer, "lr": 0.05 if optimizer != "adamw" else 1e-3,
                                         "weight_decay": 0.0})
    model = SiameseMethod(cfg, 1).eval()  # eval: fixed BN statistics, so the loss is a fixed function
    opt = build_optimizer(model, cfg)
    views = [torch.randn(16, 1, 16, 16), torch.randn(16, 1, 16, 16)]
    losses = []
    for _ in range(3):
        loss = model(views).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert losses[-1] < losses[0]


def test_channels_last_computes_the_same_step_as_nchw():
    """The speed default (NHWC convolutions) is the same function: from the same weights and
    views, loss and gradients agree to float rounding. Trajectories still drift apart over
    many steps, as with any change of summation order (bench/results/accuracy_cpu.md)."""
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        cfg = Config.from_preset("simsiam", {**TINY, "backbone_width": 16})  # width >= 16: see config.channels_last
        model = SiameseMethod(cfg, 1).to(memory_format=fmt)
        g = torch.Generator().manual_seed(0)
        views = [torch.randn(16, 1, 16, 16, generator=g).contiguous(memory_format=fmt) for _ in range(2)]
        loss = model(views).loss
        loss.backward()
        grads.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-6, rtol=1e-5)
    relative = float((grads[1][1] - grads[0][1]).norm() / grads[0][1].norm())
    # Measured 4e-5 (oneDNN's NHWC kernels sum in another order; 1 vs 2 threads in NCHW gives
    # 1e-6); a wrong layout or a real bug gives O(1).
    assert relative < 1e-3


def test_squared_l2_is_eq10_unnormalised_and_reaches_zero_on_a_constant():
    from siamdyn.methods import squared_l2
    p = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert squared_l2(p, t).item() == pytest.approx((5 + 25) / 2)  # ‖·‖² per image, mean over the batch
    const = torch.ones(4, 3) * 7.0  # complete collapse is a minimum of eq. (10), not of the cosine's −1 only
    assert squared_l2(const, const.clone()).item() == 0.0


def test_view_feature_mean_target_is_the_mean_of_the_online_outputs_and_carries_term2_only():
    """η* of eq. (7): the target equals mean_k z(T_k x) computed view by view (eval mode: fixed BN
    statistics), and gradient reaches the encoder through it only when term 2 is on."""
    torch.manual_seed(0)
    cfg = Config.from_preset("eq10", {**TINY, "target": "view_feature_mean", "mean_views": 3})
    model = SiameseMethod(cfg, 1).eval()
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(8, 1, 16, 16, generator=g) for _ in range(2)]
    extra = [torch.randn(8, 1, 16, 16, generator=g) for _ in range(3)]
    out = model(views, xbar=model.target.combine(extra))
    expected = torch.stack([model.encode(v)[1] for v in extra]).mean(0)
    torch.testing.assert_close(out.targets[0], expected)
    assert out.targets[0].requires_grad  # eq10's preset: no stop-gradient
    sg = model(views, xbar=model.target.combine(extra), grad_terms="predictor_branch")
    assert not sg.targets[0].requires_grad


def test_projector_without_output_bn_can_emit_one_constant_vector():
    """BN at the projector's end forbids a constant z (each dimension is standardised over the
    batch); `simsiam-no-out-bn` ends in a Linear with bias, so identical inputs → identical z ≠ 0."""
    torch.manual_seed(0)
    for projector, centred in (("simsiam", True), ("simsiam-no-out-bn", False)):
        model = SiameseMethod(Config.from_preset("simsiam", {**TINY, "projector": projector}), 1)
        z = model.encode(torch.randn(16, 1, 16, 16))[1]
        assert (z.mean(0).abs().max().item() < 1e-4) == centred, projector
    assert isinstance(model.projector[-1], torch.nn.Linear) and model.projector[-1].bias is not None
