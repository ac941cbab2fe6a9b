import math

import pytest
import torch

from siamdyn.config import Config
from siamdyn.methods import SiameseMethod, info_nce, negative_cosine, normalized_mse
from siamdyn.optim import ema_tau
from tests.conftest import TINY


def test_negative_cosine_on_hand_computed_vectors():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    # cosines 1 and −1/√2 → D = −(1 − 1/√2)/2
    assert negative_cosine(p, t).item() == pytest.approx(-(1 - 1 / math.sqrt(2)) / 2, abs=1e-6)


def test_normalized_mse_is_two_minus_two_cos():
    p = torch.tensor([[3.0, 4.0]])
    t = torch.tensor([[4.0, 3.0]])
    assert normalized_mse(p, t).item() == pytest.approx(2 - 2 * 24 / 25, abs=1e-6)


def test_info_nce_on_orthogonal_pairs():
    p = torch.eye(3)
    t = torch.eye(3)
    T = 0.5
    # logits: 1/T on the diagonal, 0 elsewhere → loss = −log(e^{2} / (e^{2} + 2))
    assert info_nce(p, t, T).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)), abs=1e-6)


def test_ema_update_and_schedule():
    cfg = Config.from_preset("byol", TINY)
    model = SiameseMethod(cfg, 1)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.fill_(1.0)
        for p in model.target_backbone.parameters():
            p.fill_(3.0)
    model.update_target(0.75)
    for p in model.target_backbone.parameters():
        torch.testing.assert_close(p, torch.full_like(p, 0.75 * 3 + 0.25 * 1))
    assert ema_tau(cfg, 0, 100) == pytest.approx(0.99)
    assert ema_tau(cfg, 100, 100) == pytest.approx(1.0)
    assert ema_tau(cfg.replace(tau_schedule="fixed"), 50, 100) == pytest.approx(0.99)


def test_symmetrize_sum_doubles_mean():
    torch.manual_seed(0)
    views = [torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16)]
    losses = {}
    for mode in ("mean", "sum"):
        torch.manual_seed(1)
        model = SiameseMethod(Config.from_preset("simsiam", {**TINY, "symmetrize": mode}), 1)
        losses[mode] = model(views).loss.item()
    assert losses["sum"] == pytest.approx(2 * losses["mean"], rel=1e-5)
