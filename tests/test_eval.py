import pytest
import torch

from siamdyn.eval import euclidean_knn, linear_probe, weighted_knn


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
