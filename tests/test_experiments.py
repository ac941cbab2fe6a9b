"""The experiment pipeline on the smoke budget: every grid H1–H9 runs, re-running skips
finished runs, an interrupted run resumes, and the report has a section per grid."""
import json
import os


from siamdyn.cli import main
from siamdyn.experiments.grids import GRIDS, grid_cells
from siamdyn.experiments.report import write_report
from siamdyn.experiments.runner import run_experiment


def test_all_grids_smoke_then_report(tmp_path):
    out = str(tmp_path / "exp")
    meta = run_experiment("all", "smoke", 1, out, progress=False)
    runs = meta["sessions"][0]["runs"]
    assert set(runs.values()) <= {"trained", "done before"} and "trained" in runs.values()
    for grid in GRIDS:
        for cell in grid_cells(grid):
            assert os.path.exists(os.path.join(cell.run_dir(out, 0), "summary.json")), cell
    for grid in ("H7", "H8", "H9"):
        assert os.path.exists(os.path.join(out, grid, "analysis.json"))
    h9 = json.load(open(os.path.join(out, "H9", "analysis.json")))["runs"]
    assert all(row["loss"]["pair (9)"] > 0 and row["linearisation_rel_error"] >= 0 for row in h9.values())
    # Re-running trains nothing; a run cut short (summary gone, checkpoint kept) resumes.
    victim = grid_cells("H5")[1].run_dir(out, 0)
    os.unlink(os.path.join(victim, "summary.json"))
    again = run_experiment("H5", "smoke", 1, out, progress=False)["sessions"][-1]["runs"]
    assert again[victim] == "resumed" and sorted(set(again.values())) == ["done before", "resumed"]
    text = open(write_report(out)).read()
    for grid in GRIDS:
        assert f"## {grid}" in text, grid
    assert "Verdict" in text and "figures/H1/collapse_p_std.png" in text
    assert os.path.exists(os.path.join(out, "figures", "H9.png"))


def test_experiment_cli_rejects_bad_names(tmp_path, capsys):
    assert main(["experiment", "H42", "--budget", "smoke", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'H42'" in capsys.readouterr().err
    assert main(["experiment", "H1", "--budget", "huge", "--out", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path / "none")]) == 2
