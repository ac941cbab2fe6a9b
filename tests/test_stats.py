"""The small-sample statistics of the findings (experiments/stats.py) against known values,
and the three readouts' calibration (experiments/levels.py) on hand-made held-out readings."""
import math

import pytest

from siamdyn.config import Config
from siamdyn.experiments.levels import calibrate, completeness, head_state, position
from siamdyn.experiments.readings import Run
from siamdyn.experiments.stats import (clopper_pearson, first_from, logistic_critical, prediction_interval,
                                       sign_test, spearman_interval, t_interval)


def test_intervals_match_their_textbook_values():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])  # t(0.975, 2) = 4.303, s = 1
    assert mean == 2.0 and hi - mean == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    lo_p, hi_p = prediction_interval([1.0, 2.0, 3.0])
    assert hi_p - 2.0 == pytest.approx(4.3027 * math.sqrt(1 + 1 / 3), rel=1e-4)
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(10, 10)[0] == pytest.approx(0.025 ** (1 / 10))
    assert sign_test([1, 2, 3, 4, 5]) == (5, 5, pytest.approx(0.0625))
    assert sign_test([1, -1, 0])[:2] == (1, 2)  # ties dropped
    rho, lo, hi = spearman_interval(list(range(10)), [x ** 2 for x in range(10)])
    assert rho == pytest.approx(1.0) and lo > 0.8
    assert all(math.isnan(v) for v in spearman_interval([1.0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]))  # constant: no ρ
    assert math.isnan(t_interval([1.0])[1])


def test_logistic_fit_recovers_a_known_critical_value():
    import numpy as np
    rng = np.random.default_rng(0)
    xs = np.repeat([0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], 40)
    p_collapse = 1 / (1 + np.exp(3.0 * (np.log10(xs) - np.log10(0.3))))  # λ* = 0.3, falling with λ
    fit = logistic_critical(list(xs), list(rng.random(len(xs)) < p_collapse))
    assert not fit.separated and fit.low < 0.3 < fit.high and 0.15 < fit.critical < 0.6
    sep = logistic_critical([0.01, 0.1, 1.0, 10.0], [True, True, False, False])
    assert sep.separated and sep.bracket == (pytest.approx(0.1), pytest.approx(1.0))
    # Firth's fit stays finite: by symmetry λ* is the rungs' geometric middle, inside a (wide) interval
    assert sep.critical == pytest.approx(10 ** -0.5, rel=1e-6) and sep.low < 0.1 and sep.high > 1.0 and sep.b < 0
    # more runs at each rung: a steeper fit and a narrower interval, λ* still between the split rungs
    sep5 = logistic_critical([0.01] * 5 + [0.1] * 5 + [1.0] * 5 + [10.0] * 5, [True] * 10 + [False] * 10)
    assert 0.1 < sep5.low < sep5.critical < sep5.high < 1.0 and sep5.b < sep.b
    # both outcomes at the one rung where they meet (quasi-complete separation): no maximum-likelihood fit
    # exists (Newton's information matrix goes singular), Firth's does, with λ* near that rung
    quasi = logistic_critical([0.01] * 3 + [0.1] * 3 + [1.0] * 5 + [10.0] * 3, [True] * 5 + [False] * 9)
    assert quasi.firth and not quasi.separated and quasi.bracket is None and 0.03 < quasi.critical < 0.6
    assert not fit.firth  # overlapping outcomes: the maximum-likelihood fit


def _run(z: float, p: float, centre: float = 0.2, loss: float = -0.9) -> Run:
    run = Run("x", Config(), {"steps": 100})
    for s in (80, 90, 100):
        run.heldout[s] = {"heldout/z_erank": z, "heldout/p_erank": p, "heldout/p_center_norm": centre}
    run.losses = [(100, loss)]
    return run


def test_calibration_places_heads_between_the_scales_own_controls():
    neg = [_run(30, 10), _run(34, 11), _run(32, 9)]
    pos = [_run(2, 1.5), _run(2.5, 1.8), _run(1.8, 1.4)]
    cal = calibrate(neg, pos)
    assert cal["z"].separated and cal["p"].separated
    assert position(neg[0], "z", cal["z"]) == pytest.approx(
        (math.log(30) - cal["z"].positive) / (cal["z"].negative - cal["z"].positive))
    # Heads are read apart: a run healthy in z can be collapsed in p (no min over heads).
    mixed = _run(31, 1.6)
    assert head_state(mixed, "z", cal["z"]) == "healthy" and head_state(mixed, "p", cal["p"]) == "collapsed"
    assert head_state(_run(8, 4), "z", cal["z"]) == "partial"
    # Controls that overlap do not calibrate.
    assert not calibrate([_run(3, 2), _run(30, 10)], [_run(2, 1.5), _run(25, 9)])["z"].separated
    assert calibrate(neg[:1], pos)["z"] is None  # one negative control run has no spread
    # Level (a) needs both: outputs on one vector *and* the loss at its minimum (SimSiam tab. 1 (b)).
    assert completeness(_run(2, 2, centre=0.95, loss=-0.98)) == pytest.approx(0.95)
    assert completeness(_run(2, 2, centre=0.95, loss=-0.3)) == pytest.approx(0.3)


def test_auc_and_exact_mann_whitney_on_hand_counted_samples():
    from siamdyn.experiments.early_warning import auc
    full = auc([3.0, 4.0, 5.0], [1.0, 2.0])  # every collapsed value above every healthy one
    assert full.value == 1.0 and full.p == pytest.approx(2 / 10)  # 2 of the C(5, 2) = 10 rank splits as extreme
    mixed = auc([1.0, 3.0], [2.0, 4.0])  # one of the four (collapsed, healthy) pairs is ordered
    assert mixed.value == pytest.approx(0.25) and mixed.low < 0.25 < mixed.high
    assert auc([1.0, 2.0], [2.0]).value == pytest.approx(0.25)  # a tie counts ½
    assert auc([1.0], []) is None


def test_early_predictors_read_probes_and_heldout_and_find_the_first_separating_step():
    from siamdyn.experiments.early_warning import auc_over_time, first_separating, rank_slope, speed_ratio
    runs, collapsed = [], []
    for i in range(12):
        falls = i % 2 == 0
        run = Run("x", Config(), {"steps": 100})
        for s in (0, 20, 40):  # RankMe(z) halves every 20 steps in the seeds that collapse, else stays
            run.heldout[s] = {"heldout/z_erank": 30 * (0.5 ** (s / 20) if falls else 1.0) + 0.01 * i}
        # the speed ratio is uninformative at step 1 and separates from step 10 on
        run.probes = [{"step": 1, "speed/predictor": 1.0 + 0.01 * i, "speed/stem": 1.0},
                      {"step": 10, "speed/predictor": (1.0 if falls else 3.0) + 0.01 * i, "speed/stem": 1.0}]
        runs.append(run)
        collapsed.append(falls)
    assert rank_slope(runs[0], 40) == pytest.approx(100 * math.log(0.5) / 20, rel=1e-6)
    assert rank_slope(runs[0], 0) is None
    curve = auc_over_time(runs, collapsed, speed_ratio)
    assert curve[1].p > 0.05 and curve[10].value == 0.0 and first_separating(curve) == 10
    slope = auc_over_time(runs, collapsed, rank_slope)
    assert first_separating(slope) == 20 and slope[20].value == 0.0


def test_first_from_starts_again_after_a_break():
    # holds at 1–2, breaks at 3, holds from 4 on: the first step from which it holds for good is 4
    assert first_from([5, 1, 4, 2, 3], lambda s: s != 3) == 4
    assert first_from([1, 2, 3], lambda s: s != 3) is None and first_from([1, 2], lambda s: True) == 1
