"""The findings pipeline on the smoke budget: every grid H1–H9 runs (controls once, shared),
re-running skips finished runs, an interrupted run resumes, and the report opens with each
scale's calibration, then three-valued verdicts per scale, the literature table and a
section per scale; a folder of scales (width and optimiser axes) reports as columns."""
import json
import os
import re
import subprocess

import pytest

from siamdyn.cli import main
from siamdyn.errors import SiamdynError
from siamdyn.experiments.grids import GRIDS, grid_cells
from siamdyn.experiments.report import write_report
from siamdyn.experiments.runner import plan, run_experiment
from siamdyn.experiments.scales import INIT_SEEDS
from siamdyn.experiments.verdicts import plateau_verdict, proportion_verdict, spearman, threshold_verdict, trend_verdict


def test_all_grids_smoke_then_report(tmp_path):
    out = str(tmp_path / "exp")
    meta = run_experiment("all", "smoke", None, out, progress=False)
    runs = meta["sessions"][0]["runs"]
    assert set(runs.values()) == {"trained"} and len(runs) == len(plan(list(GRIDS), "smoke", None))
    for grid in GRIDS:
        for cell in grid_cells(grid):
            assert os.path.exists(os.path.join(cell.run_dir(out, 0), "summary.json")), cell
    assert os.path.exists(os.path.join(out, "H9", "analysis.json"))
    # Re-running trains nothing; a run cut short (summary gone, checkpoint kept) resumes.
    victim = grid_cells("H5")[-1].run_dir(out, 0)
    os.unlink(os.path.join(victim, "summary.json"))
    again = run_experiment("H5", "smoke", None, out, progress=False)["sessions"][-1]["runs"]
    assert again[victim] == "resumed" and sorted(set(again.values())) == ["done before", "resumed"]
    figures = tmp_path / "exp" / "figures" / "findings"
    figures.mkdir(parents=True, exist_ok=True)
    (figures / "mine.png").write_bytes(b"png")  # a user's file: no report of ours ever linked to it
    text = open(write_report(out)).read()
    shown = re.findall(r"figures/findings/([^)\s]+)", text)
    assert shown and (figures / "mine.png").exists()
    # an earlier report of ours showed scale9.png (a scale gone since): the next report removes it, nothing else
    (figures / "scale9.png").write_bytes(b"png")
    with open(os.path.join(out, "findings.md"), "a") as f:
        f.write("![gone](figures/findings/scale9.png)\n")
    text = open(write_report(out)).read()
    assert not (figures / "scale9.png").exists() and (figures / "mine.png").exists()
    assert sorted(os.listdir(figures)) == sorted(set(shown) | {"mine.png"})
    order = [text.index(h) for h in ("## Calibration", "## Verdicts", "## Literature", "## w4 AdamW 12 steps",
                                     "## H7")]
    assert order == sorted(order)
    verdict_rows = [ln for ln in text.splitlines() if ln.startswith("| **H")]
    assert len(verdict_rows) >= 14 and all(any(v in ln for v in ("supported", "contradicted", "inconclusive",
                                                                     "protocol failed", "not run"))
                                           for ln in verdict_rows)
    # One seed per control cannot calibrate: the report says so instead of judging.
    assert "fewer than 2 finished runs" in text and "protocol failed" in text
    # An analysis never reads a run another worker is still training (its epoch checkpoint is not the encoder).
    from siamdyn.experiments.grids import analysed_cells
    from siamdyn.runs import RunLock
    busy = analysed_cells("H9")[0].run_dir(out, 0)
    for done in (os.path.join(busy, "summary.json"), os.path.join(out, "H9", "analysis.json")):
        os.unlink(done)
    with RunLock(busy):
        status = run_experiment("H9", "smoke", None, out, progress=False)["sessions"][-1]["runs"]
    assert status[busy] == "in use" and not os.path.exists(os.path.join(out, "H9", "analysis.json"))


def test_plan_runs_controls_first_and_each_directory_once():
    jobs = plan(list(GRIDS), "standard", None)
    dirs = [c.run_dir("o", s) for c, s in jobs]
    assert len(dirs) == len(set(dirs))
    n_controls = sum(c.grid == "controls" for c, _ in jobs)
    assert n_controls == 15 and all(c.grid == "controls" for c, _ in jobs[:n_controls])
    assert all(s < 3 for c, s in jobs if c.kind == "ladder") and max(s for _, s in jobs) == 4
    # --only: the matching cells and the controls; a glob that matches nothing says which cells there are
    aug = plan(["Q1-aug"], "q-w4", None, only="eq10-crop*,eq10-no-crop")
    assert {c.name for c, _ in aug} == {"simsiam", "simsiam-no-sg", "siamese", "eq10-crop0.9", "eq10-crop0.6",
                                        "eq10-no-crop"}
    assert plan(["Q1-aug"], "q-w4", None, only=" eq10-crop*, eq10-no-crop ") == aug  # spaces after commas
    with pytest.raises(SiamdynError, match="'nothing\\*' matches no cell of Q1-aug; its cells: eq10-crop0.6"):
        plan(["Q1-aug"], "q-w4", None, only="nothing*")
    with pytest.raises(SiamdynError, match="'eq10-no-crpo' matches no cell"):  # one typo among good globs
        plan(["Q1-aug"], "q-w4", None, only="eq10-crop*,eq10-no-crpo")
    with pytest.raises(SiamdynError, match="its cells: none but the controls"):
        plan(["H1"], "standard", None, only="x")
    assert len(plan(list(GRIDS), "standard", None, only="term2-only")) == 15 + 5  # `all`: H1 has no own cells
    # under Q3's SGD the controls run 5 seeds (3 did not separate their bounds), the other cells 3
    sgd = plan(["Q3"], "q-sgd-w4", None)
    assert {c.name: sum(d.name == c.name for d, _ in sgd) for c, _ in sgd} == {
        "simsiam": 5, "simsiam-no-sg": 5, "siamese": 5, "linear-predictor": 20}
    # Q2 reads features, not collapse levels: of the controls only SimSiam, the one it analyses
    q2 = plan(["Q2"], "q-sgd-w4", None)
    assert {c.name: sum(d.name == c.name for d, _ in q2) for c, _ in q2} == {
        "simsiam": 5, "byol": 3, "eq10": 3, "eq10-target-feature-mean": 3, "xbar-K4": 3}
    # Q2's second width: every cell 3 seeds, at width 8 and q-w4's steps
    from siamdyn.experiments.runner import cell_config
    w8 = plan(["Q2"], "q-w8", None)
    assert len(w8) == 5 * 3 and {s for _, s in w8} == {0, 1, 2}
    cfg, ref = cell_config(w8[-1][0], "q-w8", 0), cell_config(w8[-1][0], "q-w4", 0)
    assert (cfg.backbone_width, ref.backbone_width, cfg.max_steps) == (8, 4, ref.max_steps)


def test_status_counts_finished_running_and_to_do_runs_and_the_time_left(tmp_path, capsys):
    """`siamdyn experiment --status` reads a folder workers are training into, and trains nothing."""
    from siamdyn.cli import main
    from siamdyn.runs import RunLock
    out = tmp_path / "exp"
    done = out / "controls" / "simsiam" / "seed0"
    done.mkdir(parents=True)
    (done / "summary.json").write_text('{"wall_time_s": 360.0}')
    with RunLock(str(out / "controls" / "simsiam-no-sg" / "seed0")):  # a worker training it
        assert main(["experiment", "H1", "--budget", "smoke", "--out", str(out), "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["controls/simsiam: 1/1 done", "controls/simsiam-no-sg: 0/1 done, 1 running",
                         "controls/siamese: 0/1 done"]
    assert lines[3] == (f"H1 (smoke) in {out}: 1/3 runs done; ≈ 0.2 h of one worker left at the finished runs' "
                        "training wall times (a running run counted whole, the linear probe not)")  # 2 × 360 s
    assert not (out / "controls" / "siamese").exists()  # nothing trained, nothing created


def test_verdicts_are_three_valued():
    assert threshold_verdict([0.05, 0.1, 0.08], 0.3, True, "x").value == "supported"
    assert threshold_verdict([0.9, 1.1, 1.0], 0.3, True, "x").value == "contradicted"
    assert threshold_verdict([0.1, 0.9, 0.5], 0.3, True, "x").value == "inconclusive"
    assert threshold_verdict([0.1], 0.3, True, "x").value == "inconclusive"  # one run has no spread
    assert threshold_verdict([], 0.3, False, "x").value == "not run"
    # a bound within rounding of its threshold prints with the decimals that tell them apart
    tie = threshold_verdict([0.76, 0.80, 0.84], 0.6981, False, "x")  # lower bound 0.7006
    lo = float(re.search(r"CI ([0-9.]+),", tie.statistic).group(1))
    assert tie.value == "supported" and lo > 0.6981 and "vs 0.698" in tie.statistic, tie.statistic
    assert "vs 0.30" in threshold_verdict([0.05, 0.1, 0.08], 0.3, True, "x").statistic  # no tie: two decimals
    assert proportion_verdict(2, 20, "not collapsed").value == "supported"  # CP [0.01, 0.32]
    assert proportion_verdict(18, 20, "not collapsed").value == "contradicted"
    assert proportion_verdict(2, 5, "not collapsed").value == "inconclusive"
    assert plateau_verdict([3.0, 3.05, 2.98], [3.02, 2.99, 3.04], "r").value == "supported"
    assert plateau_verdict([3.0, 3.05, 2.98], [2.0, 2.05, 1.98], "r").value == "contradicted"
    rising = {0.01: [1.0, 1.2, 0.9], 0.1: [2.0, 2.1, 1.9], 1.0: [5.0, 4.0, 6.0], 10.0: [9.0, 8.0, 10.0]}
    assert trend_verdict(rising, +1, "x").value == "supported"
    assert trend_verdict(rising, -1, "x").value == "contradicted"
    flat = {0.01: [1.0, 5.0, 3.0], 0.1: [4.0, 1.0, 2.0], 1.0: [3.0, 2.0, 5.0]}
    assert trend_verdict(flat, +1, "x").value == "inconclusive"
    constant = trend_verdict({0.1: [2.0, 2.0], 1.0: [2.0, 2.0]}, +1, "x")
    assert constant.value == "inconclusive" and "a constant side" in constant.statistic
    import numpy as np
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)


def test_experiment_cli_rejects_bad_names(tmp_path, capsys):
    assert main(["experiment", "H42", "--budget", "smoke", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'H42'" in capsys.readouterr().err
    assert main(["experiment", "H1", "--budget", "huge", "--out", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path / "none")]) == 2


def test_scales_report_as_columns_with_the_gpu_smoke(tmp_path):
    """bench/gpu_findings.sh's CPU smoke (pilot, parallel workers, archive) gives a scale that
    `siamdyn report` reads beside another: one column per scale, each calibrated by its own controls."""
    import sys
    import tarfile
    gpu = tmp_path / "gpu"
    env = {**os.environ, "SIAMDYN_GPU_CHECK_DRY": "1", "PYTHON": sys.executable, "SIAMDYN_DRY_MINUTES": "15"}
    done = subprocess.run(["bash", "bench/gpu_findings.sh", str(gpu)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "21/21 runs finished" in done.stdout  # 9 cells × 2 seeds and each control's third seed
    scales = tmp_path / "findings"
    with tarfile.open(gpu / "gpu_findings.tar.gz") as tar:
        names = tar.getnames()
        assert not any("/ckpt" in n for n in names) and any(n.endswith("eval.json") for n in names)
        assert "dry-sgd/controls/siamese/seed2/summary.json" in names
        # the random-init reference comes from the device that trained: the reader may have no GPU
        base = json.load(tar.extractfile("dry-sgd/baseline.json"))
        assert len(base["random_init_kaiming_weighted_knn_by_seed"]) == INIT_SEEDS
        tar.extractall(scales, filter="data")
    run_experiment("core", "smoke", 1, str(scales / "smoke"), progress=False)
    run_experiment("core", "smoke-w8", 1, str(scales / "smoke-w8"), progress=False)  # the scale axis
    text = open(write_report(str(scales))).read()
    matrix = next(ln for ln in text.splitlines() if ln.startswith("| claim | level |"))
    assert "w4 AdamW 12 steps" in matrix and "w8 AdamW 12 steps" in matrix and "w4 SGD 12 steps" in matrix
    assert text.count("\nAcross the axes: scale-dependent: ") == 1
    assert "## w4 SGD 12 steps" in text and "## w4 AdamW 12 steps" in text
    h2b = next(ln for ln in text.splitlines() if ln.startswith("| **H2b**"))
    assert h2b.count("completeness") == 3  # level (a): one verdict per scale


def test_across_scales_names_the_axis_that_changes_a_verdict():
    from types import SimpleNamespace

    from siamdyn.experiments.report_tables import across
    from siamdyn.experiments.verdicts import Verdict
    def scale(label: str) -> SimpleNamespace:  # a Scale's label and setting (width, optimiser, steps)
        width, optimiser, steps, _ = label.split()
        return SimpleNamespace(label=label, setting=(int(width[1:]), optimiser, int(steps)))
    scales = [scale(x) for x in ("w4 AdamW 600 steps", "w8 AdamW 600 steps", "w8 SGD 600 steps")]
    v = lambda *vals: [{"a": Verdict(x, "")} for x in vals]  # noqa: E731
    assert across(v("supported", "contradicted", "contradicted"), scales).startswith("scale-dependent")
    assert across(v("contradicted", "contradicted", "supported"), scales).startswith("optimiser-dependent")
    assert across(v("supported", "inconclusive", "supported"), scales) == "supported wherever decided (2 of 3 scales)"
    assert across(v("inconclusive", "supported", "not run"), scales) == \
        "supported at w8 AdamW 600 steps only (undecided at the 1 other scale that ran it)"
    assert across(v("not run", "supported", "not run"), scales) == \
        "supported at w8 AdamW 600 steps only (not run at any other scale)"
    # a head whose controls failed beside a head with no runs: that scale did not run the claim either
    failed_z = {"z": Verdict("not run", ""), "p": Verdict("protocol failed", "")}
    assert across([failed_z, {"z": Verdict("supported", "")}, failed_z], scales) == \
        "supported at w8 AdamW 600 steps only (not run at any other scale)"
    # z decided at one scale, p at another, with opposite verdicts: not "holds" (H3a at w8 AdamW / w8 SGD)
    zp = [{"z": Verdict("contradicted", ""), "p": Verdict("inconclusive", "")},
          {"z": Verdict("protocol failed", ""), "p": Verdict("not run", "")},
          {"z": Verdict("protocol failed", ""), "p": Verdict("supported", "")}]
    assert across(zp, scales) == "the readouts differ (z: contradicted at w4 AdamW 600 steps, p: supported at " \
        "w8 SGD 600 steps)"
    # a longer horizon at the same width and optimiser moves a verdict: that is the scale, not the optimiser
    horizons = [scale(x) for x in ("w4 AdamW 400 steps", "w4 AdamW 6000 steps")]
    assert across(v("supported", "contradicted"), horizons) == \
        "scale-dependent (supported at w4 AdamW 400 steps, contradicted at w4 AdamW 6000 steps)"


def test_a_folder_without_its_positive_controls_reads_no_claim():
    """A folder of grid Q2 alone ran SimSiam and Q2's cells (H6's xbar-K4 among them) but no positive control:
    no claim can be read there, its calibration row says which controls never ran, and a report of such
    folders alone says so in one line instead of empty tables."""
    from types import SimpleNamespace

    from siamdyn.experiments.report import claims_sections
    from siamdyn.experiments.scales import Scale, controls_problems, has_controls
    run = [SimpleNamespace(cfg=SimpleNamespace(seed=0, backbone_width=8, optimizer="adamw"), steps=400)]
    q2 = Scale("q-w8", {}, {"controls/simsiam": run, "Q2/byol": run, "H6/xbar-K4": run, "Q1/eq10": run})
    assert not has_controls(q2)
    assert controls_problems(q2) == ["`simsiam` has fewer than 2 finished runs", "`simsiam-no-sg` not run here",
                                     "`siamese` not run here"]
    assert claims_sections([q2]) == ["## Verdicts", "", "No scale here ran all three controls (w8 AdamW 400 steps), "
                                     "so no claim is read.", ""]
    full = Scale("w8", {}, {**q2.groups, "controls/simsiam-no-sg": run, "controls/siamese": run})
    assert has_controls(full) and controls_problems(full)[1] == "`simsiam-no-sg` has fewer than 2 finished runs"


def test_the_gpu_budget_builds_a_valid_config_for_every_core_cell(monkeypatch):
    """The GPU path of bench/gpu_findings.py cannot run here; its budget must still be a valid
    config for every cell, with SGD forced over BYOL's AdamW recipe."""
    import argparse
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_findings", "bench/gpu_findings.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    from siamdyn.experiments import grids
    from siamdyn.experiments.runner import cell_config
    monkeypatch.setitem(grids.BUDGETS, "gpu-test", gpu.budget_for(argparse.Namespace(dry=False), 1000))
    monkeypatch.setitem(grids.FORCED, "gpu-test", grids.SGD_RECIPE)
    for cell in grid_cells("core"):
        cfg = cell_config(cell, "gpu-test", 0)
        assert (cfg.optimizer, cfg.backbone_width, cfg.limit, cfg.device) == ("sgd", 64, 0, "cuda"), cell
    # `questions`: the open questions' GPU cells, Q3's early predictors read from probes every 10 steps
    core = argparse.Namespace(dry=False, grid="core", seeds=3, bimodal_seeds=None, control_seeds=5)
    for table in (grids.BUDGETS, grids.FORCED, grids.SEEDS, grids.PROBE_EPOCHS):
        monkeypatch.setitem(table, "gpu-core-test", None)
    gpu.register("gpu-core-test", gpu.budget_for(core, 1000), core)
    jobs = plan(["core"], "gpu-core-test", None)  # bench/gpu_findings.sh's core: the controls at 5 seeds
    assert len(jobs) == 9 * 3 + 3 * 2 and sum(c.name == "siamese" for c, _ in jobs) == 5
    args = argparse.Namespace(dry=False, grid="Qgpu", seeds=3, bimodal_seeds=20, control_seeds=None)
    for table in (grids.BUDGETS, grids.FORCED, grids.SEEDS, grids.PROBE_EPOCHS):
        monkeypatch.setitem(table, "gpu-q-test", None)  # so that the entries register adds are removed after
    gpu.register("gpu-q-test", gpu.budget_for(args, 1000), args)
    jobs = plan(["Qgpu"], "gpu-q-test", None)
    assert sum(c.grid == "Q3" for c, _ in jobs) == 20 and len(jobs) == 9 + 20 + 5 * 3
    for cell, _ in jobs:
        cfg = cell_config(cell, "gpu-q-test", 0)
        assert (cfg.optimizer, cfg.backbone_width, cfg.device, cfg.probe_every) == ("sgd", 64, "cuda", 10), cell


@pytest.mark.parametrize("script, budget", [("questions", "q-w4"), ("findings", "sgd")])
def test_scripts_copy_the_records_of_finished_runs_only(tmp_path, script, budget):
    """bench/questions.sh's and bench/findings.sh's last stage (bench/copy_records.sh): finished runs'
    records (no checkpoints, no half-trained run) and the folders' experiment.json / analysis.json go to
    RECORDS/<budget> (the report is not run here: SIAMDYN=true)."""
    src = tmp_path / "runs"
    done, half = src / budget / "Q1" / "eq10" / "seed0", src / budget / "Q1" / "eq10" / "seed1"
    for d in (done / "ckpt", half / "ckpt", src / budget / "Q2"):
        d.mkdir(parents=True)
    for d in (done, half):
        for name in ("config.yaml", "metrics.jsonl", "ckpt/last.pt"):
            (d / name).write_text("x")
    for f in (done / "summary.json", done / "eval.json", src / budget / "experiment.json",
              src / budget / "Q2" / "analysis.json"):
        f.write_text("{}")
    env = {**os.environ, "STAGE": "report", "SIAMDYN": "true"}
    rec, docs = str(tmp_path / "rec"), str(tmp_path / "docs")
    args = [str(src), rec, docs] if script == "questions" else [str(src), docs, rec]
    subprocess.run(["bash", f"bench/{script}.sh", *args], env=env, check=True, timeout=60)
    copied = sorted(str(p.relative_to(tmp_path / "rec")) for p in (tmp_path / "rec").rglob("*") if p.is_file())
    assert copied == [f"{budget}/{name}" for name in (
        "Q1/eq10/seed0/config.yaml", "Q1/eq10/seed0/eval.json", "Q1/eq10/seed0/metrics.jsonl",
        "Q1/eq10/seed0/summary.json", "Q2/analysis.json", "experiment.json")]


def test_a_claim_reads_its_cells_twin_for_the_seeds_its_own_cell_has_not_run():
    from types import SimpleNamespace

    from siamdyn.experiments.grids import EXTRA_GRIDS, SAME_CELL
    from siamdyn.experiments.scales import Scale
    cells = {f"{c.grid}/{c.name}": c for g in GRIDS + EXTRA_GRIDS for c in grid_cells(g)}
    for own, twin in SAME_CELL.items():  # a twin is the same configuration, else its runs would read wrongly
        assert (cells[own].preset, cells[own].overrides) == (cells[twin].preset, cells[twin].overrides)
    a, b, c = (SimpleNamespace(name=n, cfg=SimpleNamespace(seed=k)) for n, k in (("h2", 0), ("q3", 0), ("q3", 1)))
    own, twin = next(iter(SAME_CELL.items()))
    assert Scale("m", {}, {twin: [b, c]}).runs([own]) == [b, c]
    assert Scale("m", {}, {own: [a], twin: [b, c]}).runs([own]) == [a, c]  # seed 0 once: its own run


def test_one_worker_runs_a_grids_analysis_and_another_goes_on(tmp_path, monkeypatch, capsys):
    import fcntl

    from siamdyn.experiments import analyses, runner
    calls = []
    monkeypatch.setattr(runner, "analysed_cells", lambda grid: [])  # every run it reads has finished
    monkeypatch.setattr(analyses, "analyse_h9", lambda out, budget, seeds: calls.append(seeds) or {"ok": 1})
    (tmp_path / "H9").mkdir()
    with open(tmp_path / "H9" / ".analysis.lock", "a") as held:  # another worker is running it
        fcntl.flock(held, fcntl.LOCK_EX)
        runner.run_analysis("H9", str(tmp_path), "smoke", 1)
    assert calls == [] and not (tmp_path / "H9" / "analysis.json").exists()
    assert "another worker is running the H9 analysis" in capsys.readouterr().err
    runner.run_analysis("H9", str(tmp_path), "smoke", 1)
    runner.run_analysis("H9", str(tmp_path), "smoke", 1)  # done: not repeated
    assert calls == [1] and (tmp_path / "H9" / "analysis.json").exists()


def test_the_cli_says_when_a_grids_analysis_is_still_pending(tmp_path, monkeypatch, capsys):
    from siamdyn.experiments import runner
    monkeypatch.setattr(runner, "run_experiment", lambda *a, **k: {"sessions": [{"wall_time_s": 6.0}]})
    assert main(["experiment", "Q2", "--budget", "smoke-q", "--out", str(tmp_path)]) == 0
    assert "its analysis is pending" in capsys.readouterr().out  # no analysis.json: nothing to report yet
    (tmp_path / "Q2").mkdir()
    (tmp_path / "Q2" / "analysis.json").write_text("{}")
    assert main(["experiment", "Q2", "--budget", "smoke-q", "--out", str(tmp_path)]) == 0
    assert "write the findings with `siamdyn report" in capsys.readouterr().out


def test_paired_table_gives_the_paired_t_interval_beside_the_sign_test(monkeypatch):
    """Three pairs: the sign test's p cannot fall below 0.25, the paired t interval of the mean difference
    (changed − base, matched by seed, unmatched seeds dropped) can exclude 0."""
    from types import SimpleNamespace

    from siamdyn.experiments import report_tables
    monkeypatch.setattr(report_tables, "position", lambda run, head, cal: run.pos)
    run = lambda seed, pos: SimpleNamespace(cfg=SimpleNamespace(seed=seed), pos=pos)  # noqa: E731
    cells = {"H2/linear-predictor-lr-x10": [run(0, 0.9), run(1, 1.0), run(2, 0.95), run(7, 0.0)],
             "H2/linear-predictor": [run(0, 0.5), run(1, 0.55), run(2, 0.6)]}
    scale = SimpleNamespace(label="w4 AdamW 600 steps", calibration={},
                            runs=lambda keys: [r for k in keys for r in cells.get(k, [])])
    rows = [ln for ln in report_tables.paired_table([scale]) if ln.startswith("| H2d vs H2c")]
    assert len(rows) == 2  # z and p
    cols = [c.strip() for c in rows[0].strip("|").split("|")]
    mean, lo, hi = map(float, re.match(r"([+-][0-9.]+) \[([+-][0-9.]+), ([+-][0-9.]+)\]", cols[3]).groups())
    assert mean == pytest.approx(0.40) and 0 < lo < mean < hi  # differences 0.40, 0.45, 0.35
    assert cols[4:] == ["3/3", "0.250"]


def test_axes_summary_horizon_and_literature_read_every_label_across_gives():
    """The line under the matrix puts each claim in the group its across-label names (a z readout that
    'differs' between unpaired scales included), the horizon names each collapse claim's longest deciding
    run, and the literature column turns the across-label into agree / disagree / mixed."""
    from types import SimpleNamespace

    from siamdyn.experiments.claims import CLAIMS
    from siamdyn.experiments.report_tables import agreement, axes_summary, horizon_line, random_init_cell
    from siamdyn.experiments.verdicts import Verdict
    def scale(label: str) -> SimpleNamespace:
        width, optimiser, steps, _ = label.split()
        return SimpleNamespace(label=label, setting=(int(width[1:]), optimiser, int(steps)))
    scales = [scale(x) for x in ("w4 AdamW 6000 steps", "w4 AdamW 600 steps", "w8 SGD 600 steps")]
    a = lambda *vals: [{"a": Verdict(x, "")} for x in vals]  # noqa: E731
    verdicts = {c.key: a("not run", "not run", "not run") for c in CLAIMS}
    verdicts.update({"H1": a("supported", "contradicted", "not run"),  # a longer horizon moves it: scale
                     "H2b": a("not run", "supported", "contradicted"),  # w4 AdamW against w8 SGD: unpaired
                     "H2d": [{"z": Verdict("contradicted", "")}, {"z": Verdict("not run", "")},
                             {"z": Verdict("supported", "")}],
                     "H3a": a("contradicted", "inconclusive", "contradicted"),
                     "H5": a("not run", "supported", "inconclusive")})
    summary = axes_summary(scales, verdicts)
    assert summary.startswith("Across the axes: ")
    groups = dict(part.split(": ", 1) for part in summary[len("Across the axes: "):].rstrip(".").split("; "))
    assert groups["scale-dependent"] == "H1" and groups["optimiser-dependent"] == "none"
    assert groups["readouts or unpaired axes differ"] == "H2b, H2d"
    assert groups["the same verdict at every scale that decides it"] == "H3a"
    assert groups["decided at one scale only"] == "H5"
    assert groups["not decided at any scale"].startswith("H1b, H2a, H2c, H3d,")
    assert "H4a" in groups["not decided at any scale"]
    horizon = horizon_line(scales, verdicts)
    assert "H1 to 6000 steps (w4 AdamW 6000 steps)" in horizon and "H3a to 6000 steps" in horizon
    assert "H5 to 600 steps (w4 AdamW 600 steps)" in horizon and "H1b not decided" in horizon
    by_key = {c.key: c for c in CLAIMS}
    assert agreement(by_key["H3a"], "contradicted wherever decided (2 of 3 scales)") == "**disagree**"
    assert agreement(by_key["H2b"], "supported at w4 AdamW 600 steps only (not run at any other scale)") == "agree"
    assert agreement(by_key["H2b"], "scale-dependent (supported at …)") == "mixed (see the matrix)"
    assert agreement(by_key["H6"], "contradicted wherever decided").startswith("— (no published result)")
    assert agreement(by_key["H1b"], "supported wherever decided").startswith("— (the source argues it")
    assert random_init_cell({"k": 53.58, "k_sd": 5.33, "k_by_seed": [1, 2, 3, 4, 5]}, "k") == "53.6 ± 5.3 (5)"
    assert random_init_cell({"k": 57.95}, "k") == "58.0 (1)" and random_init_cell({}, "k") == "—"
