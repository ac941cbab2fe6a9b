"""Which folders a run or an experiment may go into: one holding only what an operating system leaves
(lost+found on a fresh disk, .DS_Store, Thumbs.db) counts as empty; `--overwrite` replaces a run with
what was made from it (its exports and eval.json) and says so, so no stale export sits beside a new run."""
import os

from siamdyn.cli import main
from siamdyn.experiments.runner import check_experiment_dir
from siamdyn.runs import check_run_dir

QUICK = ["--dataset", "synthetic", "--set", "backbone_width=2", "--set", "proj_hidden=8", "--set", "proj_dim=8",
         "--set", "pred_hidden=4", "--set", "batch_size=16", "--set", "max_steps=1", "--set", "knn_every=0",
         "--set", "probe_every=0", "--no-progress"]


def test_a_folder_of_os_litter_is_empty_for_a_run_and_an_experiment(tmp_path):
    for name in ("lost+found", ".DS_Store", "Thumbs.db"):
        (tmp_path / name).mkdir() if name == "lost+found" else (tmp_path / name).write_text("")
    check_run_dir(str(tmp_path), overwrite=False, resume=False)  # a mount point of a fresh disk
    check_experiment_dir(str(tmp_path))
    assert main(["train", "--out", str(tmp_path), *QUICK]) == 0
    assert {"config.yaml", "lost+found", ".DS_Store"} <= set(os.listdir(tmp_path))


def test_overwrite_replaces_the_exports_of_the_old_run_and_says_so(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, *QUICK]) == 0
    assert main(["export", out]) == 0 and os.path.exists(os.path.join(out, "backbone.pt"))
    capsys.readouterr()
    assert main(["train", "--out", out, "--overwrite", *QUICK, "--set", "seed=1"]) == 0
    err = capsys.readouterr().err
    assert "--overwrite replaced the run in" in err and "backbone.json, backbone.pt" in err, err
    assert not os.path.exists(os.path.join(out, "backbone.pt"))
    assert not os.path.exists(os.path.join(out, ".replaced-run"))
