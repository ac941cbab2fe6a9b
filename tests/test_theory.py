"""The toy model (docs/seed.md §4) and the linear theory (Tian et al. 2021)."""
import json

import numpy as np
import pytest

from siamdyn.cli import main
from siamdyn.theory import toy
from siamdyn.theory.linear import LinearSetup, alignment, train_linear


def test_toy_reproduces_the_seed_table():
    s = toy.summary(0.6, 0.1, 20.0)
    sg, full, t2 = (s["variants"][v] for v in toy.VARIANTS)
    assert sg["phi"] == pytest.approx(1.000, abs=1e-3) and sg["theta"] == pytest.approx(0.806, abs=1e-3)
    assert not sg["collapsed"] and full["collapsed"] and t2["collapsed"]
    assert full["theta"] < 0.01 and full["phi"] == pytest.approx(0.613, abs=2e-3)
    assert t2["theta"] < 0.01 and t2["phi"] == pytest.approx(0.605, abs=2e-3)


def test_conserved_quantity_of_the_stop_gradient_flow():
    for ratio in (1.0, 3.0):
        s = toy.summary(0.6, 0.1, 20.0, ratio)
        c = s["conserved_quantity"]
        assert c["initial"] == pytest.approx(0.36 - ratio * 0.01)
        assert c["max_abs_drift"] < 1e-6
    # ... and it is *not* conserved by the full-gradient flow
    sol = toy.integrate("full_gradient", 0.6, 0.1, 20.0)
    inv = sol["phi"][0] ** 2 - sol["theta"][0] ** 2
    assert abs(inv[-1] - inv[0]) > 0.01


def test_critical_ratio_matches_the_invariant():
    """From φ0 < 0, stop-gradient collapses iff ratio < φ0²/θ0² (here 9)."""
    sweep = toy.ratio_sweep(np.array([4.0, 8.0, 10.0, 16.0]), -0.6, 0.2, lr=0.01, t_end=100.0)
    assert sweep["predicted_critical_ratio"] == pytest.approx(9.0)
    assert sweep["collapsed"] == [True, True, False, False]


def test_discrete_gd_agrees_with_the_flow_for_small_steps():
    gd = toy.gradient_descent("stop_gradient", 0.6, 0.1, lr=0.001, steps=20000)
    assert gd["phi"][-1] == pytest.approx(1.0, abs=1e-3) and gd["theta"][-1] == pytest.approx(0.806, abs=2e-3)


def test_toy_cli_json(tmp_path, capsys):
    assert main(["toy", "--json", "--no-plots"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["variants"]["stop_gradient"]["theta"] == pytest.approx(0.806, abs=1e-3)
    assert out["variants"]["full_gradient"]["collapsed"] is True
    assert main(["toy", "--ratio", "-1", "--no-plots"]) == 2


def test_alignment_measure():
    u, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))
    f = u @ np.diag([4.0, 3.0, 2.0, 1.0]) @ u.T
    assert alignment(u @ np.diag([1.0, 2.0, 0.5, 0.1]) @ u.T, f) == pytest.approx(1.0)
    assert alignment(np.eye(4)[[1, 0, 3, 2]], f) < 0.9  # a permutation is not aligned


SMALL = dict(input_dim=8, output_dim=4, steps=1500)


def test_linear_without_stop_gradient_collapses():
    res = train_linear(LinearSetup(**SMALL, stop_gradient=False))
    assert res["final"]["rank_W"] == 0 and res["final"]["collapsed"]


def test_linear_without_predictor_collapses():
    assert train_linear(LinearSetup(**SMALL, predictor="none"))["final"]["rank_W"] == 0


def test_linear_with_stop_gradient_and_predictor_keeps_rank_and_aligns():
    res = train_linear(LinearSetup(**SMALL))
    assert res["final"]["rank_W"] > 0 and not res["final"]["collapsed"]
    assert res["final"]["alignment"] > 0.99
    # alignment grows from its random start
    assert res["history"]["alignment"][0] < 0.9


def test_linear_directpred_and_ema_keep_rank():
    assert train_linear(LinearSetup(**SMALL, directpred=True))["final"]["rank_W"] > 0
    assert train_linear(LinearSetup(**SMALL, tau=0.9))["final"]["rank_W"] > 0


def test_linear_cli(tmp_path, capsys):
    assert main(["linear", "--compare", "--set", "steps=300", "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["no stop-gradient"]["setup"]["stop_gradient"] is False
    assert (tmp_path / "linear_stop_gradient_predictor.png").exists()
    assert main(["linear", "--set", "colour=1", "--no-plots"]) == 2


def test_the_basin_not_the_initial_speed_decides_collapse_in_the_toy():
    from siamdyn.theory.toy import initial_speed_ratio, speed_vs_basin
    assert initial_speed_ratio(0.6, 0.1) == pytest.approx(1 / 6)  # the seed's start: the encoder 6× faster
    res = speed_vs_basin(n=200, seed=1)
    # The basin misses only starts on its boundary, where the flow is too slow to settle by t_end.
    assert res["basin_predicts"] >= 0.99 and res["speed_predicts"] < res["basin_predicts"] - 0.05
    fast_but_doomed = res["table"]["predictor faster, collapse basin"]
    assert fast_but_doomed["collapsed"] == fast_but_doomed["runs"] > 0  # a faster predictor did not save them


def test_linear_sweep_follows_tian_et_al_on_weight_decay_and_predictor_lr():
    import dataclasses

    from siamdyn.theory.linear import LinearSetup
    from siamdyn.theory.sweep import prediction, run_sweep
    rows = run_sweep(dataclasses.replace(LinearSetup(), steps=3000), weight_decays=(0.0, 0.1), ratios=(0.1, 3.0),
                     taus=(0.0,), seeds=1)
    rank = {(r["weight_decay"], r["predictor_lr_ratio"]): r["rank_W"] for r in rows}
    assert rank[0.0, 0.1] == rank[0.0, 3.0] == LinearSetup().output_dim  # no weight decay: every mode survives
    assert rank[0.1, 0.1] < rank[0.1, 3.0] < LinearSetup().output_dim  # decay kills modes; a fast predictor saves some
    assert prediction(rows, "weight_decay", -1)["verdict"] == "agrees"
