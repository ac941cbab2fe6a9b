"""One writer for every output file (outputs.py): plots, exports and reports are written atomically,
never over an existing file without --overwrite, and any OSError is one line naming the path and
the cause (exit 2, no traceback). The export carries its input normalisation and rebuild lines."""
import json
import os

import pytest
import torch

from siamdyn.checkpoint import Checkpoint
from siamdyn.cli import main
from siamdyn.config import Config
from siamdyn.experiments.report import TITLE, earlier_figures
from siamdyn.methods import SiameseMethod
from siamdyn.runs import load_run_config
from siamdyn.train import train
from tests.conftest import TINY, run_digest


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("outputs") / "run"
    train(Config.from_preset("simsiam", {**TINY, "max_steps": 3, "knn_every": 0}), str(out), progress=False)
    return str(out)


@pytest.fixture
def unwritable(tmp_path) -> str:
    """A real folder this process cannot create files in. Root ignores file modes, so for root it
    is /sys (sysfs refuses new files with EACCES)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        yield str(folder)
        folder.chmod(0o755)
        return
    if not os.path.isdir("/sys"):
        pytest.skip("running as root without /sys: no folder refuses root's writes")
    yield "/sys"


def _one_line(capsys, argv: list[str]) -> str:
    """Run `siamdyn ARGV`, expect exit 2 and a single `siamdyn: error:` line; return it."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("siamdyn: error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("where", ["inside", "below"])
def test_plot_and_export_into_an_unwritable_folder_are_one_line(run, unwritable, capsys, where):
    target = unwritable if where == "inside" else os.path.join(unwritable, "siamdyn-test", "deeper")
    err = _one_line(capsys, ["plot", run, "--out", target])
    assert "cannot write " + target in err and ("Permission denied" in err or "not permitted" in err), err
    err = _one_line(capsys, ["export", run, "--out", os.path.join(target, "backbone.pt")])
    assert "cannot write " + target in err and "free disk space" not in err, err


def test_a_file_in_the_path_is_one_line_and_leaves_no_temp_file(run, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    err = _one_line(capsys, ["export", run, "--out", str(blocker / "backbone.pt")])
    assert f"cannot write {blocker}" in err and "a file stands where a folder should be" in err, err
    assert os.listdir(tmp_path) == ["a-file"]


def test_plot_refuses_an_existing_file_or_pngs_already_there_naming_overwrite(run, tmp_path, capsys):
    out = tmp_path / "plots"
    out.write_text("my notes")
    err = _one_line(capsys, ["plot", run, "--out", str(out)])
    assert f"--out {out} is a file" in err and "--overwrite" in err
    assert out.read_text() == "my notes"
    assert main(["plot", run, "--out", str(out), "--overwrite"]) == 0  # asked for: the folder replaces the file
    before = run_digest(str(out))
    err = _one_line(capsys, ["plot", run, "--out", str(out)])
    assert "loss.png" in err and "already exists; pass --overwrite" in err
    assert run_digest(str(out)) == before  # refused before anything was drawn
    os.unlink(out / "loss.png")
    assert main(["plot", run, "--out", str(out), "--overwrite"]) == 0  # the others are replaced, loss.png is new
    assert (out / "loss.png").is_file() and not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_export_out_a_folder_names_a_file_and_gives_no_disk_advice(run, tmp_path, capsys):
    err = _one_line(capsys, ["export", run, "--out", str(tmp_path)])
    assert f"{tmp_path} is a folder" in err and os.path.join(str(tmp_path), "backbone.pt") in err
    assert "free disk space" not in err and "resume" not in err


def test_export_writes_the_normalisation_and_the_rebuild_lines_beside_the_weights(run, tmp_path, capsys):
    weights = tmp_path / "simsiam.pt"
    assert main(["export", run, "--out", str(weights)]) == 0
    card = json.loads((tmp_path / "simsiam.json").read_text())
    ckpt = Checkpoint.load_run(run)
    assert card["input"]["mean"] == ckpt.data_mean.flatten().tolist()
    assert card["input"]["std"] == ckpt.data_std.flatten().tolist()
    assert card["rebuild"] in capsys.readouterr().out
    scope: dict = {}
    exec(card["rebuild"], scope)  # the printed lines run as they are
    trained = SiameseMethod(load_run_config(run), 1)
    trained.load_state_dict(ckpt.model)
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    x = (images.float() / 255 - scope["mean"]) / scope["std"]
    expected = trained.backbone.eval()((images.float() / 255 - ckpt.data_mean.view(1, -1, 1, 1))
                                       / ckpt.data_std.view(1, -1, 1, 1))
    torch.testing.assert_close(scope["backbone"].eval()(x), expected, rtol=0, atol=0)


def test_export_refuses_to_overwrite_without_overwrite(run, tmp_path, capsys):
    weights = tmp_path / "b.pt"
    assert main(["export", run, "--out", str(weights)]) == 0
    (tmp_path / "b.json").write_text("{}")  # the card alone is in the way: still refused
    before = weights.read_bytes()
    err = _one_line(capsys, ["export", run, "--out", str(weights)])
    assert "already exists; pass --overwrite" in err
    assert weights.read_bytes() == before and (tmp_path / "b.json").read_text() == "{}"
    assert main(["export", run, "--out", str(weights), "--overwrite"]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["file"] == str(weights)


def test_report_regenerates_its_own_findings_but_refuses_a_foreign_file(tmp_path, capsys):
    findings = tmp_path / "findings.md"
    findings.write_text(TITLE + "\n\nan earlier report\n![a](figures/findings/a.png)\n")
    # its own: regenerated without a word, and only the figures it linked to may be pruned
    assert earlier_figures(str(findings), overwrite=False) == {"a.png"}
    assert earlier_figures(str(findings), overwrite=True) == {"a.png"}  # --overwrite still prunes our own
    findings.write_text("# my notes\n")
    err = _one_line(capsys, ["report", str(tmp_path)])
    assert "not written by siamdyn report; pass --overwrite" in err
    assert findings.read_text() == "# my notes\n"
    findings.write_text("# my notes\n![b](figures/findings/b.png)\n")
    assert earlier_figures(str(findings), overwrite=True) == set()  # replaced, but its figures are not the report's


def test_export_never_writes_into_the_runs_own_checkpoint(run, capsys):
    ckpt = os.path.join(run, "ckpt", "last.pt")
    before = open(ckpt, "rb").read()
    for flags in ([], ["--overwrite"]):
        err = _one_line(capsys, ["export", run, "--out", ckpt, *flags])
        assert "would replace ckpt of run" in err and os.path.join(run, "backbone.pt") in err, err
    assert open(ckpt, "rb").read() == before
