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


def test_report_names_and_leaves_out_a_run_it_cannot_read(tmp_path, capsys):
    """A truncated summary.json used to end `siamdyn report` in a JSONDecodeError; damaged metric lines
    (beyond a crash's half-written last one) were skipped without a word."""
    import json
    import shutil
    run = str(tmp_path / "run")
    assert main(["train", "--out", run, *QUICK, "--set", "heldout_every=1", "--set", "heldout_images=16"]) == 0
    exp = tmp_path / "exp"
    for seed in range(3):
        shutil.copytree(run, exp / "controls" / "simsiam" / f"seed{seed}")
    (exp / "experiment.json").write_text(json.dumps({"sessions": [], "budget": "smoke", "seeds": None}))
    summary = exp / "controls" / "simsiam" / "seed0" / "summary.json"
    summary.write_text(summary.read_text()[:40])
    lines = (exp / "controls" / "simsiam" / "seed1" / "metrics.jsonl").read_text().splitlines(keepends=True)
    (exp / "controls" / "simsiam" / "seed1" / "metrics.jsonl").write_text("".join([lines[0], "{garbled\n", *lines[1:]]))
    with open(exp / "controls" / "simsiam" / "seed2" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a crash's half-written last line: the run stays in
    capsys.readouterr()
    assert main(["report", str(exp), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "seed0 is left out of the report: " in err and "seed0/summary.json is not valid JSON" in err, err
    assert "seed1 is left out of the report: its metrics.jsonl has 1 unreadable line(s)" in err, err
    assert "seed2" not in err and "Traceback" not in err
    report = (tmp_path / "out" / "findings.md").read_text()
    assert "| controls/simsiam | 1 |" in report  # one run of three read


def test_a_run_config_cut_short_is_refused_not_read_as_defaults(tmp_path, capsys):
    """A config.yaml cut inside its `config:` block parses as YAML; read as it is, every missing field would
    take its default (width 16 on Fashion-MNIST for a width-2 synthetic run) and report and probe would
    describe another run. siamdyn writes `config:` then `versions:`, so a file without both is refused."""
    out = str(tmp_path / "run")
    assert main(["train", "--out", out, *QUICK]) == 0
    path = os.path.join(out, "config.yaml")
    text = open(path).read()
    open(path, "w").write(text[:text.index("backbone_width")])  # a clean cut: valid YAML, fields missing
    capsys.readouterr()
    for argv in (["probe", out], ["train", "--out", out, "--resume", "--no-progress"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert "is incomplete (no `versions:` mapping" in err[-1] and "restore it or train the run again" in err[-1]
    # what needs no config.yaml still works: export reads the checkpoint's config, plot only metrics.jsonl
    # (without the 1/√d line a default proj_dim would have drawn wrong)
    assert main(["export", out]) == 0 and main(["plot", out, "--out", str(tmp_path / "plots")]) == 0
    open(path, "w").write("")
    assert main(["probe", out]) == 2 and "no `config:` mapping" in capsys.readouterr().err
