import pytest
import torch

from siamdyn.config import Config
from siamdyn.eval import euclidean_knn, linear_probe, weighted_knn
from tests.conftest import TINY


def clusters(n_per=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    x = torch.cat([c + torch.randn(n_per, 2, generator=g) for c in centres])
    y = torch.arange(3).repeat_interleave(n_per)
    return x, y


def test_knn_on_separated_clusters_is_perfect():
    xtr, ytr = clusters(seed=0)
    xte, yte = clusters(seed=1)
    assert weighted_knn(xtr, ytr, xte, yte, k=10, temperature=0.1) == 100.0
    assert euclidean_knn(xtr, ytr, xte, yte, k=5) == 100.0


def test_knn_known_answer_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    queries = torch.tensor([[1.0, 0.05], [0.1, 1.0]])
    # k=1: nearest by cosine is bank 0 for query 0 and bank 2 for query 1 → both right
    assert weighted_knn(bank, labels, queries, torch.tensor([0, 1]), k=1) == 100.0
    # Same queries, labels swapped → both wrong
    assert weighted_knn(bank, labels, queries, torch.tensor([1, 0]), k=1) == 0.0
    # k=3 plain vote: two class-0 neighbours outvote one class-1 → query 1 goes to class 0 → 50 %
    assert euclidean_knn(bank, labels, queries, torch.tensor([0, 1]), k=3) == 50.0


def test_linear_probe_learns_separable_data():
    xtr, ytr = clusters(seed=0)
    xte, yte = clusters(seed=1)
    res = linear_probe(xtr, ytr, xte, yte, epochs=20, batch_size=16)
    assert res["linear_test_acc"] == pytest.approx(100.0)


@pytest.mark.parametrize("exact_batchnorm", [False, True])  # fx folds exact types: ours is swapped back
def test_bn_folded_encoder_gives_the_same_features_and_leaves_the_model_alone(exact_batchnorm):
    from siamdyn.config import Config
    from siamdyn.eval import fused_for_inference
    from siamdyn.methods import SiameseMethod
    from tests.conftest import TINY
    torch.manual_seed(0)
    model = SiameseMethod(Config.from_preset("simsiam", {**TINY, "exact_batchnorm": exact_batchnorm}), 1)
    model.train()([torch.randn(32, 1, 16, 16) * 2 + 1, torch.randn(32, 1, 16, 16)])  # non-trivial running stats
    model.eval()
    x = torch.randn(8, 1, 16, 16)
    fused = fused_for_inference(model.backbone)
    n_bn = lambda m: sum(isinstance(c, torch.nn.BatchNorm2d) for c in m.modules())  # noqa: E731
    assert n_bn(fused) == 0 < n_bn(model.backbone)  # folded away in the copy, kept in the model
    torch.testing.assert_close(fused(x), model.backbone(x), atol=1e-4, rtol=1e-4)


def test_random_init_reference_is_a_mean_over_draws_each_its_own_seed():
    """run_baseline's init_seeds: the mean of draws cfg.seed, cfg.seed + 1, …, each the reading a single-draw
    baseline with that seed gives; the SD is the draws' sample SD; a bad count is refused."""
    import statistics

    from siamdyn.baseline import run_baseline
    cfg = Config.from_preset("simsiam", {**TINY, "limit": 256, "test_limit": 64})
    many = run_baseline(cfg, linear_epochs=1, init_seeds=3)
    draws = many["random_init_kaiming_weighted_knn_by_seed"]
    assert len(draws) == 3 and len(set(draws)) > 1  # three different encoders
    assert many["random_init_kaiming_weighted_knn"] == pytest.approx(sum(draws) / 3)
    assert many["random_init_kaiming_weighted_knn_sd"] == pytest.approx(statistics.stdev(draws))
    assert len(many["random_init_kaiming_linear_by_seed"]) == 3
    second = run_baseline(cfg.replace(seed=cfg.seed + 1), linear_epochs=1)
    assert second["random_init_kaiming_weighted_knn"] == pytest.approx(draws[1])
    assert "random_init_kaiming_weighted_knn_sd" not in second  # one draw: no spread to state
    with pytest.raises(ValueError, match="init_seeds=0"):
        run_baseline(cfg, init_seeds=0)
