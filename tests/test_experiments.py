"""The findings pipeline on the smoke budget: every grid H1–H9 runs (controls once, shared),
re-running skips finished runs, an interrupted run resumes, and the report opens with the
controls, then three-valued verdicts, the literature table and a section per grid."""
import os

import pytest

from siamdyn.cli import main
from siamdyn.experiments.grids import GRIDS, grid_cells
from siamdyn.experiments.report import write_report
from siamdyn.experiments.runner import plan, run_experiment
from siamdyn.experiments.verdicts import binary_verdict, spearman, trend_verdict


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
    text = open(write_report(out)).read()
    order = [text.index(h) for h in ("## Controls", "## Verdicts", "## Literature", "## H2", "## H7")]
    assert order == sorted(order)
    assert "Status: **all behaving**" in text or "Status: **protocol failed**" in text
    verdict_lines = [ln for ln in text.splitlines() if ln.startswith("- **H")]
    assert len(verdict_lines) >= 12 and all(any(v in ln for v in ("supported", "contradicted", "inconclusive",
                                                                      "protocol failed", "not run"))
                                            for ln in verdict_lines)
    assert os.path.exists(os.path.join(out, "figures", "findings", "controls.png"))
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


def test_verdicts_are_three_valued():
    assert binary_verdict([0.05, 0.1, 0.08], "collapsed").value == "supported"
    assert binary_verdict([0.9, 1.1, 1.0], "collapsed").value == "contradicted"
    assert binary_verdict([0.1, 0.9, 0.5], "collapsed").value == "inconclusive"
    assert binary_verdict([], "healthy").value == "not run"
    rising = {0.01: [1.0, 1.2, 0.9], 0.1: [2.0, 2.1, 1.9], 1.0: [5.0, 4.0, 6.0], 10.0: [9.0, 8.0, 10.0]}
    assert trend_verdict(rising, +1, "x").value == "supported"
    assert trend_verdict(rising, -1, "x").value == "contradicted"
    flat = {0.01: [1.0, 5.0, 3.0], 0.1: [4.0, 1.0, 2.0], 1.0: [3.0, 2.0, 5.0]}
    assert trend_verdict(flat, +1, "x").value == "inconclusive"
    import numpy as np
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)


def test_experiment_cli_rejects_bad_names(tmp_path, capsys):
    assert main(["experiment", "H42", "--budget", "smoke", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'H42'" in capsys.readouterr().err
    assert main(["experiment", "H1", "--budget", "huge", "--out", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path / "none")]) == 2
