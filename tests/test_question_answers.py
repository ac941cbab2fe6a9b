"""The open questions' answer paragraphs (report_answers.py) say what the readings say: which single
factor changes eq. (10)'s outcome, what is left unread where the controls do not calibrate, how f(x̄)
compares with f(x) and with the blur control, and which early predictor first separates the seeds
that collapse. Runs are built in memory with the readings a finished run records."""
import math

import pytest
from types import SimpleNamespace

from siamdyn.experiments.early_warning import PREDICTORS, SPEED, auc_over_time, first_separating, rho_over_time
from siamdyn.experiments.levels import log_rank
from siamdyn.experiments.feature_choice import BLUR
from siamdyn.experiments.levels import HeadScale
from siamdyn.experiments.question_readouts import knn_change_from, outcomes
from siamdyn.experiments.readings import Run
from siamdyn.experiments.report_answers import outcome, q1_answer, q2_answer, q3_answer
from siamdyn.experiments.scales import Scale

# log RankMe(z): 2 at the positive controls, 50 at SimSiam; collapsed below position 0.3
CALIBRATION = {"z": HeadScale(math.log(2), math.log(50), 0.3, 0.7), "p": None}
OVERLAP = {"z": HeadScale(math.log(2), math.log(50), 0.55, -0.1), "p": None}  # the bounds cross
EQ10 = dict(target="view_mean", grad_terms="both", predictor="none", loss="l2", projector="simsiam",
            symmetrize="mean", optimizer="sgd", backbone_width=4)


def run(z_rank: float, centre: float = 0.3, z_norm_end: float = 20.0, final_loss=5.0,
        probes: list[dict] | None = None, **cfg) -> Run:
    heldout = {s: {"heldout/z_erank": z_rank if s else 200.0, "heldout/p_center_norm": centre,
                   "heldout/z_mean_norm": 20.0 if s == 0 else z_norm_end} for s in range(0, 101, 20)}
    losses = [(s, 10.0 if s < 10 else final_loss) for s in range(0, 101, 5)]
    return Run("mem", SimpleNamespace(**{**EQ10, **cfg}), {"steps": 100}, heldout, probes or [], losses)


def _groups() -> dict[str, list[Run]]:
    return {"Q1/eq10": [run(3.0), run(2.5)],  # the z head collapsed (b), not completely
            "Q1/eq10-predictor": [run(2.8, predictor="mlp"), run(3.1, predictor="mlp")],
            "Q1/eq10-target-view": [run(2.8, target="online"), run(45.0, target="online")],  # seeds split
            "Q1/eq10-no-out-bn": [run(60, centre=0.99, final_loss=0.0, z_norm_end=2.0, projector="simsiam-no-out-bn")
                                  for _ in range(2)]}


def test_the_q1_answer_names_the_factor_that_changes_the_outcome_and_those_that_leave_it():
    scale = Scale("mem", {}, _groups(), CALIBRATION)
    text = str(outcome(scale.groups["Q1/eq10"], scale))
    assert text == "z collapsed (b) (in 2/2 runs; (a) P(complete) 0/2 [0.00, 0.84])"
    assert outcome(scale.groups["Q1/eq10-no-out-bn"], scale).label == "complete collapse (a)"
    text = "\n".join(q1_answer(scale, {}))
    eq10 = next(line for line in text.splitlines() if line.startswith("- **Around eq10**"))
    assert "changes the outcome with: output BN no (`eq10-no-out-bn`) → complete collapse (a)" in eq10
    assert "Leaves it: predictor mlp (n = 2)." in eq10
    assert ("Undecided (seeds split or unread): target another view (`eq10-target-view`: split (z collapsed (b) 1/2, "
            "z healthy (b) 1/2;") in eq10
    assert "Around SimSiam" not in text and "Two factors" not in text  # neither was run
    assert "only the default crops" in text


def test_where_the_controls_bounds_overlap_no_state_is_read_only_the_nearer_control():
    scale = Scale("mem", {}, _groups(), OVERLAP)
    o = outcome(scale.groups["Q1/eq10"], scale)
    assert o.label == "z nearer the collapsed controls (b, uncalibrated)" and "(b, uncalibrated) 2/2" in o.detail
    assert "z collapsed (b)" not in "\n".join(q1_answer(scale, {}))
    unread = outcome(scale.groups["Q1/eq10"], Scale("mem", {}, {}, {"z": None}))
    assert unread.label == "unread" and not unread.decided and "(b) unread 2/2" in unread.detail


def test_an_unread_or_split_cell_is_compared_with_nothing():
    groups = _groups()
    groups["Q1/eq10-predictor"] = [run(45.0, predictor="mlp") for _ in range(2)]
    uncalibrated = Scale("mem", {}, groups, {"z": None})
    # z unread at the centre: nothing is compared with it
    eq10 = next(x for x in q1_answer(uncalibrated, {}) if x.startswith("- **Around eq10**"))
    assert "The centre has no outcome (unread)" in eq10 and "Leaves it" not in eq10
    # a centre read by (a), a neighbour whose z is unread: undecided, neither leaving nor changing it
    groups["Q1/eq10"] = [run(45.0, centre=0.99, final_loss=0.0) for _ in range(2)]
    eq10 = next(x for x in q1_answer(uncalibrated, {}) if x.startswith("- **Around eq10**"))
    undecided = eq10.split("Undecided (seeds split or unread): ")[1]
    assert "predictor mlp (`eq10-predictor`: unread" in undecided and "predictor mlp" not in eq10.split("Undecided")[0]
    assert "Leaves it: output BN no (n = 2)." in eq10
    # most runs unread, one complete: "unread", not "complete collapse (a) in 1/1 runs read"
    mostly = outcome([run(45.0, centre=0.99, final_loss=0.0)] + [run(45.0) for _ in range(4)], uncalibrated)
    assert mostly.label == "unread" and not mostly.decided
    # a centre whose seeds split
    groups["Q1/eq10"] = [run(3.0), run(45.0)]
    eq10 = next(x for x in q1_answer(Scale("mem", {}, groups, CALIBRATION), {}) if x.startswith("- **Around eq10**"))
    assert "The centre has no outcome (split), so no factor is compared with it" in eq10
    assert "changes the outcome" not in eq10 and "predictor mlp (`eq10-predictor`: z healthy (b)" in eq10


def test_the_backbone_change_starts_at_the_last_reading_before_the_step_or_else_the_first_after():
    knn = SimpleNamespace(summary={"knn": [{"step": 156, "knn_acc": 60.0}, {"step": 312, "knn_acc": 58.0},
                                           {"step": 400, "knn_acc": 57.0}]})
    assert knn_change_from(knn, 60) == -3.0 and knn_change_from(knn, 320) == -1.0
    assert knn_change_from(knn, 400) is None  # no reading after the start


def test_the_q2_answer_reads_each_difference_against_its_own_reference():
    rows = {f"enc/seed{i}": {"f(x)": {"knn": 70.0 + i}, "f(x̄_8)": {"knn": 65.0 + 1.2 * i},
                             BLUR: {"knn": 60.0 + i}, "mean_k f(T_k x), K = 8": {"knn": 70.0 + i + (-1) ** i}}
            for i in range(4)}
    text = " ".join(q2_answer("w4", {"enc": rows}))
    assert "f(x̄_8) − f(x) -4.7 [" in text and "(f(x) better)" in text
    assert "f(x̄_8) − the blur control +5.3 [" in text and "(f(x̄_8) better)" in text  # above 0: x̄ beats blur
    assert "the feature mean − f(x) +0.0" in text and "(not separated from 0)" in text
    # across trained encoders (random init aside), each comparison's readings are counted
    both = " ".join(q2_answer("w4", {"random init": rows, "enc": rows, "enc2": rows}))
    assert ("Across the 2 trained encoders: f(x̄_8) against f(x): f(x) better in 2; f(x̄_8) against the blur control: "
            "f(x̄_8) better in 2; the feature mean against f(x): not separated from 0 in 2.") in both


def _speed_probes(ratio: float) -> list[dict]:
    groups = ("stem", "stage1", "stage2", "stage3", "stage4", "projector")
    return [{"step": s, "speed/predictor": ratio * (1 + 0.01 * s), **{f"speed/{g}": 1.0 for g in groups}}
            for s in range(10, 101, 10)]


def _q3(runs: list[Run]) -> str:
    scale = Scale("mem", {}, {"Q3/linear-predictor": runs}, CALIBRATION)
    runs, collapsed, steps, rule = outcomes(runs, scale)
    curves = {n: c for n, at in PREDICTORS.items() if (c := auc_over_time(runs, collapsed, at))}
    return " ".join(q3_answer("w4 SGD", collapsed, steps, rule, curves, {n: first_separating(c) for n, c in
                                                                        curves.items()}))


def test_the_q3_answer_names_the_earliest_separating_predictor_and_its_lead():
    collapsed = [run(2.2 + 0.1 * i, probes=_speed_probes(0.5 + 0.05 * i)) for i in range(5)]
    healthy = [run(45.0 + i, probes=_speed_probes(2.0 + 0.05 * i)) for i in range(5)]
    text = _q3(collapsed + healthy)
    assert "5 of 10 seeds collapsed (complete collapse (a) or z collapsed (b))" in text
    # the speed ratio is read from step 10, the RankMe slope only from the second held-out reading (20);
    # every collapsed run's z is collapsed from its first reading after step 0, so the median collapse is 20
    assert f"The best early predictor is {SPEED}: AUC 0.00 [" in text
    assert "from step 10, 10 steps before the median collapse" in text
    assert ("the predictor's relative speed separates the outcomes from step 10 (AUC 0.00, lower in the seeds that "
            "collapse)") in text
    # p's centre norm is the same in every run here: the outcome read early separates at no step
    assert "The outcome read early (p's centre-vector norm) separates the outcomes at no step held to the end." in text
    assert "did not split" in _q3(healthy) and "0 of 5 seeds collapsed" in _q3(healthy)
    few = rho_over_time(healthy[:4], [log_rank(r, "z") for r in healthy[:4]], PREDICTORS[SPEED])
    assert few == {}  # 4 seeds give ρ = ±1 by chance one time in 12: no reading below MIN_RHO_RUNS


def test_a_q3_seed_that_collapsed_completely_counts_as_collapsed_whatever_its_z_rank():
    complete = run(45.0, centre=0.99, final_loss=0.0)  # p collapsed to one point from the first reading on
    scale = Scale("mem", {}, {}, CALIBRATION)
    runs, collapsed, steps, rule = outcomes([complete, run(45.0), run(2.5)], scale)
    assert collapsed == [True, False, True] and steps == [0, 20] and rule.startswith("complete collapse (a) or")
    _, collapsed, _, rule = outcomes([complete, run(45.0)], Scale("mem", {}, {}, OVERLAP))
    assert collapsed == [True, False] and rule == "complete collapse (a); z not calibrated"


def test_the_continuous_reading_names_the_earliest_correlated_predictor_without_any_split():
    from siamdyn.experiments.early_warning import first_correlated
    from siamdyn.experiments.report_answers import rho_answer
    # no seed collapses, but the final rank grows with the early speed ratio (the RankMe slope too, but
    # only from its first reading, step 20)
    runs = [run(10.0 + 4 * i, probes=_speed_probes(0.5 + 0.2 * i)) for i in range(10)]
    final = [log_rank(r, "z") for r in runs]
    rhos = {n: c for n, at in PREDICTORS.items() if (c := rho_over_time(runs, final, at))}
    firsts = {n: first_correlated(c) for n, c in rhos.items()}
    assert firsts[SPEED] == 10 and rhos[SPEED][10][0] == pytest.approx(1.0) and rhos[SPEED][10][3] == 10
    text = rho_answer(rhos, firsts, len(runs))
    assert f"{SPEED} correlates earliest: ρ +1.00 [" in text and "from step 10" in text
    # the final rank varies, barely with the speed ratio: ρ +0.09 on these 10 seeds
    flat = [run(20.0 + 3 * i, probes=_speed_probes(1.0 + 0.1 * [3, 9, 0, 6, 1, 8, 4, 2, 7, 5][i])) for i in range(10)]
    flat_final = [log_rank(r, "z") for r in flat]
    flat_rhos = {n: c for n, at in PREDICTORS.items() if (c := rho_over_time(flat, flat_final, at))}
    flat_firsts = {n: first_correlated(c) for n, c in flat_rhos.items()}
    flat_text = rho_answer(flat_rhos, flat_firsts, 10)
    assert flat_firsts[SPEED] is None and "the predictor's relative speed at no step" in flat_text
    s = max(flat_rhos[SPEED], key=lambda k: abs(flat_rhos[SPEED][k][0]))
    assert f"its ρ is farthest from 0 at step {s}: {flat_rhos[SPEED][s][0]:+.2f} [" in flat_text


def test_the_backbone_after_a_collapse_is_read_beside_runs_that_did_not_collapse_over_the_same_steps():
    from siamdyn.experiments.report_answers import after_head_collapse

    def with_knn(r: Run, accs: list[float]) -> Run:
        r.summary["knn"] = [{"step": s, "knn_acc": a} for s, a in zip((30, 60, 100), accs)]
        return r
    gone = [with_knn(run(45.0, centre=0.99, final_loss=0.0), [50.0, 50.0, 50.0 - d]) for d in (2, 4, 2, 4)]
    alive = [with_knn(run(45.0, target="online"), [50.0, 52.0 + i, 53.0 + i]) for i in range(3)]
    # runs of one cell are not independent draws across cells: each cell's mean is one unit
    groups = {"Q1/eq10": gone[:2], "Q1/eq10-predictor": gone[2:3], "Q1/eq10-target-feature-mean": gone[3:],
              "Q1/simsiam-l2": alive[:1], "Q1/simsiam-no-out-bn": alive[1:2], "Q1/simsiam-target-xbar": alive[2:]}
    text = after_head_collapse(Scale("mem", {}, groups, OVERLAP))
    # p's centre norm is complete from step 0, so each collapsed run reads from its first kNN reading (30);
    # cell means -3, -2, -4
    assert "backbone kNN changes -3.0 [" in text and "(mean over 3 cells of their runs' means, 4 runs: below 0)" in text
    assert "runs that did not collapse, from step 0: +4.0 [" in text and "(mean over 3 cells of their runs' means, 3 " \
        "runs: above 0)" in text
    # a single cell: its runs are the units, as said
    one = after_head_collapse(Scale("mem", {}, {"Q1/eq10": gone, **{k: v for k, v in groups.items() if "simsiam" in k}},
                                    OVERLAP))
    assert "backbone kNN changes -3.0 [" in one and "(one cell, its 4 runs as the units: below 0)" in one


def test_one_reading_per_run_so_a_complete_collapse_is_not_also_counted_healthy_at_b():
    complete_high_rank = [run(45.0, centre=0.99, final_loss=0.0) for _ in range(2)]
    scale = Scale("mem", {}, {}, CALIBRATION)
    o = outcome(complete_high_rank + [run(45.0), run(45.0)], scale)
    assert o.label == "split" and "complete collapse (a) 2/4" in o.detail and "z healthy (b) 2/4" in o.detail


def test_the_collapse_step_comes_from_the_readout_that_says_the_run_collapsed():
    from siamdyn.experiments.question_readouts import collapse_step, collapsed
    scale = Scale("mem", {}, {}, CALIBRATION)
    only_b = run(2.5, centre=0.99, final_loss=5.0)  # p's centre norm high from step 0, but completeness 0.5
    assert collapsed(only_b, scale) and collapse_step(only_b, scale) == 20  # z collapsed from its first reading
    shrunk_noise = run(45.0, z_norm_end=2.0)  # z shrank toward 0: a high rank may be noise, so it is not read
    assert collapsed(shrunk_noise, scale) is False
    # ... but noise never reads low: a shrunk z with a collapsed rank is collapsed, like the positive controls
    assert collapsed(run(2.5, z_norm_end=2.0), scale) is True


def test_a_run_collapsed_by_its_window_mean_whose_last_reading_dips_has_no_step_and_is_counted_apart():
    from siamdyn.experiments.question_readouts import collapse_step, collapsed, steps_missing
    from siamdyn.experiments.report_answers import after_head_collapse
    dips = run(45.0, centre=0.99, final_loss=0.0)
    dips.heldout[100]["heldout/p_center_norm"] = 0.85  # window (steps 80, 100) mean 0.92: complete
    steady = run(45.0, centre=0.99, final_loss=0.0)
    for r in (dips, steady):
        r.summary["knn"] = [{"step": 30, "knn_acc": 50.0}, {"step": 100, "knn_acc": 48.0}]
    scale = Scale("mem", {}, {"Q1/eq10": [dips, steady]}, CALIBRATION)
    # no single reading stays complete to the end: its step is unknown, and a made-up one would move the leads
    assert collapsed(dips, scale) and collapse_step(dips, scale) is None and steps_missing([dips], scale) == 1
    assert "1 collapsed run(s) have no collapse step" in after_head_collapse(scale)


def test_the_complete_step_is_the_first_from_which_the_centre_norm_stays_complete():
    from siamdyn.experiments.levels import time_to_complete
    r = run(45.0)
    for s, v in {0: 0.5, 20: 0.95, 40: 0.5, 60: 0.95, 80: 0.97, 100: 0.99}.items():
        r.heldout[s]["heldout/p_center_norm"] = v
    assert time_to_complete(r) == 60  # complete at 20 too, but not from there on


def test_the_q3_section_reads_rho_against_each_runs_final_completeness(tmp_path):
    from siamdyn.experiments.report_questions import speed_basin_lines
    # no seed collapses; the final completeness (the loss half, 1 − final/first, below p's centre norm) grows
    # with the early speed ratio, which the section must read from the runs' own completeness
    runs = [run(45.0, centre=0.95, final_loss=9.0 - 0.4 * i, probes=_speed_probes(0.5 + 0.2 * i)) for i in range(10)]
    text = "\n".join(speed_basin_lines(Scale("mem", {}, {"Q3/linear-predictor": runs}, CALIBRATION), str(tmp_path), 0))
    row = next(x for x in text.splitlines() if x.startswith(f"| {SPEED} |") and "ρ" not in x and "+1.00" in x)
    assert row.startswith(f"| {SPEED} | 10 | +1.00 [")
    assert f"{SPEED} correlates earliest: ρ +1.00 [" in text and "of the 10 seeds" in text
    assert (tmp_path / "q3_auc0.png").exists()


def test_the_outcome_read_early_is_the_baseline_a_predictor_must_beat():
    from siamdyn.experiments.early_warning import BASELINE, first_correlated
    from siamdyn.experiments.report_answers import rho_answer
    # p's centre norm already orders the seeds at step 0 (the initial condition); the speed ratio is flat
    runs = [run(45.0, centre=0.3 + 0.05 * i, probes=_speed_probes(1.0)) for i in range(10)]
    final = [0.3 + 0.05 * i for i in range(10)]
    rhos = {n: c for n, at in PREDICTORS.items() if (c := rho_over_time(runs, final, at))}
    firsts = {n: first_correlated(c) for n, c in rhos.items()}
    assert firsts[BASELINE] == 0 and SPEED not in rhos  # a constant speed ratio has no ρ
    text = rho_answer(rhos, firsts, 10)
    # the baseline is what the others are measured against, never named the best predictor
    assert "no early predictor's ρ excludes 0" in text and f"{BASELINE} correlates earliest" not in text
    assert "The outcome read early (p's centre-vector norm, from the initial condition on) correlates from step 0." \
        in text


def test_the_lead_over_the_outcome_read_early_is_a_range_between_its_readings():
    from siamdyn.experiments.report_answers import baseline_sentence
    steps = [0, 20, 40, 60, 80, 100]  # the baseline is read at the held-out steps only
    text = baseline_sentence("DirectPred", 61, steps, 100, "separates the outcomes")
    assert text.endswith("from step 100 (not held from its reading at 80): DirectPred leads it by 20–39 steps.")
    assert baseline_sentence("DirectPred", 90, steps, 100, "separates").endswith("leads it by at most 10 steps.")
    assert baseline_sentence("DirectPred", 120, steps, 100, "separates").endswith("from step 120, does not lead it.")
    assert "at no step held to the end" in baseline_sentence("DirectPred", 61, steps, None, "separates")


def test_a_step_without_a_rho_reading_breaks_from_there_on():
    from siamdyn.experiments.early_warning import first_correlated
    groups = ("stem", "stage1", "stage2", "stage3", "stage4", "projector")

    def probes(i: int) -> list[dict]:  # the speed ratio orders the seeds at every step but 50, where it is flat
        return [{"step": s, "speed/predictor": 1.0 if s == 50 else 0.5 + 0.1 * i, **{f"speed/{g}": 1.0 for g in groups}}
                for s in range(10, 101, 10)]
    runs = [run(45.0, probes=probes(i)) for i in range(10)]
    curve = rho_over_time(runs, [float(i) for i in range(10)], PREDICTORS[SPEED])
    assert math.isnan(curve[50][0]) and curve[40][0] == pytest.approx(1.0)
    assert first_correlated(curve) == 60  # not 10: the flat step is a break, not a skipped one


def test_across_scales_each_q1_cell_and_q2_comparison_holds_or_moves_with_the_axis_named(tmp_path):
    """The open questions' "Across scales" block: a cell read at two widths under one optimiser that reads
    differently is scale-dependent, at two optimisers optimiser-dependent; a cell read at one scale is counted,
    not compared, and so is one read against uncalibrated controls; a Q2 comparison every trained encoder
    decides alike at each scale holds, one they read differently (or not separated from 0) is not compared;
    a folder without the positive controls (grid Q2 alone) gives Q2 a scale but not Q1."""
    import json
    import os

    from siamdyn.experiments.report_across import across_lines

    def folder(z_eq10: float, split: bool, **cfg) -> dict[str, list[Run]]:
        controls = {f"controls/{c}": [run(r, **cfg) for _ in range(2)]
                    for c, r in (("simsiam", 45.0), ("simsiam-no-sg", 2.0), ("siamese", 2.0))}
        return {**controls, "Q1/eq10": [run(z_eq10, **cfg) for _ in range(2)],
                "Q1/eq10-target-view": [run(2.8, **cfg), run(45.0 if split else 2.9, **cfg)]}
    rows = lambda gap: {f"{e}/seed{i}": {"f(x)": {"knn": 70.0 + i}, "f(x̄_8)": {"knn": 70.0 + i - gap[e] - 0.1 * i},  # noqa: E731
                                        BLUR: {"knn": 60.0 + i}, "mean_k f(T_k x), K = 8": {"knn": 70.0 + i}}
                        for e in gap for i in range(3)}
    w4 = folder(3.0, False, target="online")
    w4["Q1/eq10-no-out-bn"] = _groups()["Q1/eq10-no-out-bn"]  # at one scale only
    specs = [("w4", w4, CALIBRATION, {"simsiam": 5.0, "byol": 6.0}),
             ("w8", folder(45.0, True, backbone_width=8), CALIBRATION, {"simsiam": 5.0, "byol": -6.0}),
             ("w4-adamw", folder(3.0, False, optimizer="adamw"), OVERLAP, {"simsiam": 5.0, "byol": 4.0}),
             ("q2-only", {"controls/simsiam": [run(45.0, backbone_width=16)], "Q1/eq10": [run(3.0, backbone_width=16)]},
              {"z": None, "p": None}, {"simsiam": 5.0, "byol": 4.0})]
    scales = []
    for name, groups, cal, gap in specs:
        os.makedirs(tmp_path / name / "Q2")
        (tmp_path / name / "Q2" / "analysis.json").write_text(json.dumps({"runs": rows(gap)}))
        scales.append(Scale(str(tmp_path / name), {}, groups, cal))
    text = "\n".join(across_lines(scales))
    assert "| cell | w4 SGD 100 steps | w8 SGD 100 steps | w4 AdamW 100 steps |" in text  # not the Q2-only folder
    assert "| `eq10` | z collapsed (b) 2/2 | z healthy (b) 2/2 | z nearer the collapsed controls" in text
    assert ("Outcome: the same at every scale that read it: none; not compared (at a scale its seeds split, were "
            "unread or sat between uncalibrated controls): simsiam, eq10, eq10-target-view. 1 cell(s) ran at one "
            "scale only.") in text
    assert "Q2 at w4 SGD 100 steps, w8 SGD 100 steps, w4 AdamW 100 steps, w16 SGD 100 steps" in text
    assert "| f(x̄_8) against f(x) | f(x) better in 2 | f(x) better in 1, f(x̄_8) better in 1 | f(x) better in 2 |" \
        in text
    assert ("Verdict: the same at every scale that read it: f(x̄_8) against the blur control; not compared (at a "
            "scale the trained encoders read it differently, or not separated from 0): f(x̄_8) against f(x) (pooled: "
            "f(x) better in 7, f(x̄_8) better in 1), the feature mean against f(x) (pooled: not separated from 0 in "
            "8).") in text
    calibrated = "\n".join(across_lines(scales[:2]))  # both SGD, widths 4 and 8: eq10 moves with the width
    assert "moves: eq10: scale-dependent (z collapsed (b) at w4 SGD, z healthy (b) at w8 SGD)" in calibrated
    adamw = Scale(scales[2].path, {}, folder(45.0, False, optimizer="adamw"), CALIBRATION)  # width 4, AdamW
    optimisers = "\n".join(across_lines([scales[0], adamw]))
    assert ("the same at every scale that read it: simsiam, eq10-target-view; moves: eq10: optimiser-dependent "
            "(z collapsed (b) at w4 SGD, z healthy (b) at w4 AdamW).") in optimisers
    assert across_lines(scales[:1]) == []  # one scale: nothing to set beside
