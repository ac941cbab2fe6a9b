"""H9's estimators (experiments/expansion.py) on cases with known answers."""
import torch

from siamdyn.experiments.expansion import expansion_at, pair_estimators


def test_the_three_pair_estimators_estimate_the_same_quantity_and_the_mean_target_varies_least():
    """Views f(T x) = x + noise of variance s² per dim: E‖f(T1x) − f(T2x)‖² = 2·d·s²."""
    g = torch.Generator().manual_seed(0)
    d, s, m, n = 8, 0.5, 8, 64
    draws = {k: [] for k in ("mean target (7), all pairs", "disjoint pairs (9)", "one pair (9)")}
    for _ in range(400):
        x = torch.randn(n, d, generator=g)
        views = x[None] + s * torch.randn(m, n, d, generator=g)
        for k, v in pair_estimators(lambda t: t, views).items():
            draws[k].append(float(v))
    means = {k: sum(v) / len(v) for k, v in draws.items()}
    for k, mean in means.items():
        assert abs(mean - 2 * d * s * s) < 0.05 * 2 * d * s * s, (k, mean)
    var = {k: float(torch.tensor(v).var()) for k, v in draws.items()}
    assert var["mean target (7), all pairs"] < var["disjoint pairs (9)"] < var["one pair (9)"]


class _Crop:
    """A stand-in augmentation: a fixed image shift (so T x − x is a real image difference)."""

    def normalize(self, x):
        return x

    def __call__(self, x, g):
        return torch.roll(x, shifts=1, dims=-1)


def test_first_order_error_is_zero_for_a_linear_encoder_and_grows_with_strength_for_a_nonlinear_one():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 6, 6)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 5))
    assert expansion_at(linear, x, _Crop(), 2, 1.0, seed=0)["linearisation_rel_error"] < 1e-5
    nonlinear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 32), torch.nn.Tanh(),
                                    torch.nn.Linear(32, 5))
    weak, strong = (expansion_at(nonlinear, 3 * x, _Crop(), 2, eps, seed=0)["linearisation_rel_error"]
                    for eps in (0.01, 1.0))
    assert weak < 0.05 < strong
