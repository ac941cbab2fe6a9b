"""The open questions' answer paragraphs (report_answers.py) say what the readings say: which single
factor changes eq. (10)'s outcome, and which early predictor first separates the seeds that collapse.
Runs are built in memory with the readings a finished run records."""
import math
from types import SimpleNamespace

from siamdyn.experiments.levels import HeadScale
from siamdyn.experiments.readings import Run
from siamdyn.experiments.report_answers import outcome, q1_answer, q3_answer
from siamdyn.experiments.scales import Scale

# log RankMe(z): 2 at the positive controls, 50 at SimSiam; collapsed below position 0.3
CALIBRATION = {"z": HeadScale(math.log(2), math.log(50), 0.3, 0.7), "p": None}
EQ10 = dict(target="view_mean", grad_terms="both", predictor="none", loss="l2", projector="simsiam",
            symmetrize="mean", optimizer="sgd", backbone_width=4)


def run(z_rank: float, centre: float = 0.3, z_norm_end: float = 20.0, first_loss: float = 10.0, final_loss=5.0,
        probes: list[dict] | None = None, **cfg) -> Run:
    heldout = {s: {"heldout/z_erank": z_rank if s else 200.0, "heldout/p_center_norm": centre,
                   "heldout/z_mean_norm": 20.0 if s == 0 else z_norm_end} for s in range(0, 101, 20)}
    losses = [(s, first_loss if s < 10 else final_loss) for s in range(0, 101, 5)]
    return Run("mem", SimpleNamespace(**{**EQ10, **cfg}), {"steps": 100}, heldout, probes or [], losses)


def test_the_q1_answer_names_the_factor_that_changes_the_outcome_and_those_that_leave_it():
    groups = {"Q1/eq10": [run(3.0), run(2.5)],  # the z head collapsed (b), not completely
              "Q1/eq10-predictor": [run(2.8, predictor="mlp"), run(3.1, predictor="mlp")],
              "Q1/eq10-no-out-bn": [run(60, centre=0.99, final_loss=0.0, z_norm_end=2.0, projector="simsiam-no-out-bn")
                                    for _ in range(2)]}
    scale = Scale("mem", {}, groups, CALIBRATION)
    assert outcome(groups["Q1/eq10"], scale).startswith("z collapsed (b) in 2/2")
    assert outcome(groups["Q1/eq10-no-out-bn"], scale).startswith("complete collapse (a), 2/2")
    text = "\n".join(q1_answer(scale, {}))
    eq10 = next(line for line in text.splitlines() if line.startswith("- **Around eq10**"))
    assert "changes the outcome with: output BN no (`eq10-no-out-bn`) → complete collapse (a)" in eq10
    assert "Leaves it: predictor mlp (n = 2)." in eq10
    assert "Around SimSiam" not in text  # its control was not run
    assert "only the default crops" in text


def _speed_probes(ratio: float) -> list[dict]:
    groups = ("stem", "stage1", "stage2", "stage3", "stage4", "projector")
    return [{"step": s, "speed/predictor": ratio * (1 + 0.01 * s), **{f"speed/{g}": 1.0 for g in groups}}
            for s in range(10, 101, 10)]


def test_the_q3_answer_names_the_earliest_separating_predictor_and_says_when_seeds_do_not_split():
    collapsed = [run(2.2 + 0.1 * i, probes=_speed_probes(0.5 + 0.05 * i)) for i in range(5)]
    healthy = [run(45.0 + i, probes=_speed_probes(2.0 + 0.05 * i)) for i in range(5)]
    scale = Scale("mem", {}, {"Q3/linear-predictor": collapsed + healthy}, CALIBRATION)
    text = " ".join(q3_answer(scale))
    assert "5 of 10 seeds collapsed (z collapsed (b))" in text
    # the speed ratio is read from step 10, the RankMe slope only from the second held-out reading (20)
    assert "The best early predictor is predictor speed / encoder speed: AUC 0.00" in text
    assert "from step 10" in text and "separates the outcomes from step 10" in text
    unsplit = Scale("mem", {}, {"Q3/linear-predictor": healthy}, CALIBRATION)
    assert "did not split (0 of 5 seeds collapsed)" in " ".join(q3_answer(unsplit))
