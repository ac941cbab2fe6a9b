"""A fuzz pass over the command line (hypothesis): random commands, flags, config keys and
values — garbage included — never give a traceback: exit 0, or exit 2 with one line
(argparse's own usage errors exit 2 too), and an existing run directory never changes."""
import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siamdyn.cli import main
from siamdyn.config import Config
from tests.conftest import run_digest

QUICK = ["--set", "dataset=synthetic", "--set", "backbone_width=2", "--set", "proj_hidden=8", "--set", "proj_dim=8",
         "--set", "pred_hidden=4", "--set", "batch_size=16", "--set", "max_steps=1", "--set", "knn_k=3",
         "--set", "knn_every=0", "--set", "probe_every=0", "--no-progress"]
KEYS = sorted(Config.__dataclass_fields__) + ["colour", "", "lr lr"]
VALUES = st.one_of(st.sampled_from(["0", "-1", "1e9", "nan", "inf", "true", "x", "", "0.5", "2", "simsiam", "ema",
                                    "none", "1,2", "[1]", "{a: 1}", "\x00"]),
                   st.text(max_size=8))


def _digest(folder):
    """Every file of the run, but the outputs `probe` and `export` are there to add."""
    return run_digest(folder, skip=("eval.json", "backbone.pt", "backbone.json"))


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fuzz") / "victim")
    assert main(["train", "--out", out, *QUICK]) == 0
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["train", "probe", "export", "plot", "report", "baseline", "experiment", "toy",
                                "linear", "nonsense"]),
       sets=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3),
       flags=st.lists(st.sampled_from(["--resume", "--overwrite", "--preset", "byol", "--preset", "simsaim",
                                       "--epochs", "-3", "--limit", "x", "--config", "/nonexistent.yaml",
                                       "--t-end", "-1", "--no-plots"]), max_size=3),
       target=st.sampled_from(["victim", "new", "nowhere"]))
def test_no_cli_input_gives_a_traceback_or_touches_an_existing_run(victim, tmp_path, monkeypatch, command, sets,
                                                                   flags, target):
    monkeypatch.chdir(tmp_path)  # commands' default outputs (runs/, plots/) land here
    before = _digest(victim)
    place = {"victim": victim, "new": str(tmp_path / "new"), "nowhere": "/nonexistent/run"}[target]
    argv = [command]
    if command in ("probe", "export", "plot", "report"):
        argv.append(place)
    if command == "experiment":  # a valid grid would train for minutes: fuzz its argument checks
        argv += ["H0", "--out", place]
    if command == "train":
        argv += ["--out", place, *QUICK]
    if command == "baseline":
        argv += ["--dataset", "synthetic", "--inits", "kaiming"]
    argv += [a for k, v in sets for a in ("--set", f"{k}={v}")] if command in ("train", "baseline") else []
    argv += flags
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: unknown flag or bad type, exit 2 with its usage line
            code = e.code
    text = err.getvalue()
    assert code in (0, 2), (argv, text)
    assert "Traceback" not in text, (argv, text)
    if code == 2 and "usage:" not in text:
        assert text.strip().count("\n") == 0 and text.startswith("siamdyn: error: "), (argv, text)
    if target == "victim" and "--overwrite" not in flags:
        assert _digest(victim) == before, argv
