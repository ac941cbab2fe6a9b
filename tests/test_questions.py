"""The seed's open questions on the smoke budget (docs/open_questions.md): the eq. (10) factorial
(Q1), its augmentation axis (Q1-aug), f(x) against f(x̄) with the blur control (Q2) and speed
against basin (Q3) train through the real pipeline, and the report writes their section."""
import json
import os
import torch

from siamdyn.experiments.grids import AUGMENTATION, FACTORIAL, SPEED_BASIN
from siamdyn.experiments.report import write_report
from siamdyn.experiments.runner import run_experiment
from tests.conftest import with_second_worker


def test_open_questions_smoke_then_report(tmp_path):
    """Two workers share the folder, as on a 2-core machine: a second process runs Q1-aug while
    this one runs Q1, Q2 and Q3; the controls they share are trained once (run locks)."""
    out = str(tmp_path / "smoke")
    with_second_worker("Q1-aug", "smoke-q", out,
                       lambda: [run_experiment(g, "smoke-q", None, out, progress=False) for g in ("Q1", "Q2", "Q3")])
    for grid in ("Q1-aug", "Q2"):  # what one worker left "in use" by the other, and an analysis it held back
        run_experiment(grid, "smoke-q", None, out, progress=False)
    sessions = json.load(open(os.path.join(out, "experiment.json")))["sessions"]
    trained = [d for sess in sessions for d, what in sess["runs"].items() if what == "trained"]
    assert len(trained) == len(set(trained))  # each run trained by one worker only
    assert any(sess["grids"] == ["Q1-aug"] and "trained" in sess["runs"].values() for sess in sessions[:2])  # kept
    for cell in FACTORIAL + AUGMENTATION + SPEED_BASIN:
        assert os.path.exists(os.path.join(cell.run_dir(out, 0), "summary.json")), cell
    metrics = [json.loads(ln) for ln in open(os.path.join(FACTORIAL[1].run_dir(out, 0), "metrics.jsonl"))]
    assert any("heldout/proj_hidden_erank" in r for r in metrics)  # the third depth is read
    q3 = [json.loads(ln) for ln in open(os.path.join(SPEED_BASIN[0].run_dir(out, 0), "metrics.jsonl"))]
    assert any("pred_eig_alignment" in r for r in q3)  # DirectPred's alignment, linear predictor only
    analysis = json.load(open(os.path.join(out, "Q2", "analysis.json")))
    row = analysis["runs"]["random init/seed0"]
    assert {"f(x)", "f(centre crop)", "f(x̄_16)", "mean_k f(T_k x), K = 8"} <= set(row)
    assert "f(blur x), as sharp as x̄_8" in row and all(0 <= v["knn"] <= 100 for v in row.values())
    assert 0 < analysis["blur sigma"]["random init/seed0"] < 8
    text = open(write_report(out)).read()
    section = text[text.index("## The seed's open questions"):]
    eq10 = next(ln for ln in section.splitlines() if ln.startswith("| eq10 |"))
    assert "| f(x̄) | off | none | l2 | yes |" in eq10  # eq. (10) as written
    assert "mean_k f(T_k x) | off | none | l2 | yes |" in section
    assert "Not visible in this design" in section and "| eq10 | " in section.split("crop0.9")[1]
    order = [section.index(h) for h in ("### Q1 at", "### Q2 at", "### Q3 at")]
    assert order == sorted(order) and "| f(blur x), as sharp as x̄_8 | " in section
    assert section.count("**Answer at") == 3 and "- **Around eq10** (`Q1/eq10`: " in section  # Q1, Q2, Q3
    assert "f(x̄_8) − the blur control" in section
    figures = set(os.listdir(os.path.join(out, "figures", "findings")))
    assert {"q1_depths0.png", "q2_inputs0.png"} <= figures and "![Q1 at" in section and "![Q2 at" in section


def test_feature_choice_blur_matches_the_pixel_mean_and_the_centre_crop_is_central():
    from siamdyn.data import AugmentParams, BatchAugment
    from siamdyn.experiments.feature_choice import (REFERENCE_K, blur, centre_crop, matched_sigma, pixel_mean,
                                                    sharpness)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(64, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    images[..., :, 14:] = 0  # a hard edge that blurring and crop-averaging both smear
    augment = BatchAugment(AugmentParams(), torch.tensor([0.5]), torch.tensor([0.25]))
    sigma = matched_sigma(augment, images, torch.Generator().manual_seed(1))
    x = augment.normalize(images)
    target = sharpness(pixel_mean(augment, REFERENCE_K, torch.Generator().manual_seed(1))(images))
    assert sharpness(x) > 2 * target  # x̄ is blurred
    assert abs(sharpness(blur(x, sigma)) / target - 1) < 0.3  # as sharp as x̄, to the σ grid's 25 % steps
    whole = centre_crop(augment, 1.0)(images)
    torch.testing.assert_close(whole, x, atol=1e-5, rtol=0)  # area 1: the image itself
    half = centre_crop(augment, 0.25)(images)  # the central 14 × 14, resized: left half kept, right half 0
    assert float(half[..., :, -3:].max()) == float(augment.normalize(torch.zeros(1, 1, 1, 1, dtype=torch.uint8)))


def test_a_z_head_that_shrank_toward_zero_is_not_read_by_its_rank():
    """Eq. (10) without the output BN shrinks z to noise whose RankMe reads "healthy": such a run is
    counted as shrunk, not given a level-(b) state."""
    from types import SimpleNamespace

    from siamdyn.experiments.levels import z_shrank
    run = lambda *norms: SimpleNamespace(heldout={20 * i: {"heldout/z_mean_norm": n} for i, n in enumerate(norms)})  # noqa: E731
    assert z_shrank(run(20.0, 9.0, 2.1)) and not z_shrank(run(20.0, 19.0, 18.5)) and not z_shrank(run(20.0))


def test_eq10s_own_crop_arms_run_as_many_seeds_as_every_q1_cell():
    """The question asks for which crop strengths eq. (10) collapses: its arms need Q1's 5 seeds at q-w4 (so
    P(complete collapse) has the same interval as the Q1 cell); the arms around the other bases stay at 3."""
    from siamdyn.experiments.grids import CROPS, seeds_for
    own = [c for c in AUGMENTATION if c.name in {f"{FACTORIAL[0].name}-{arm}" for arm in CROPS}]
    assert len(own) == 3 and {seeds_for(c, "q-w4") for c in own} == {seeds_for(FACTORIAL[0], "q-w4")} == {5}
    assert {seeds_for(c, "q-w4") for c in AUGMENTATION if c not in own} == {3}
    assert seeds_for(own[0], "q-w4", seeds=2) == 2
