"""A fuzz pass over the command line (hypothesis): random commands, flags, config keys and
values — garbage included — never give a traceback: exit 0, or exit 2 with one line
(argparse's own usage errors exit 2 too), and an existing run directory never changes."""
import contextlib
import io
import os

import pytest
from hypothesis import HealthCheck, example, given, settings
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


FILES = ["config.yaml", "metrics.jsonl", "summary.json", "ckpt/last.pt", ".lock"]
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _read_only:
    """`run` as a read-only mount shows it: every write, create, rename or delete under it fails with
    EACCES (played by patching the calls, since root ignores file modes). Undone by __exit__."""

    def __init__(self, run: str):
        import builtins
        from unittest import mock
        real_open, real_os_open = builtins.open, os.open

        def refuse(path) -> None:
            if os.path.abspath(os.fspath(path)).startswith(run):
                raise PermissionError(13, "Permission denied", os.fspath(path))

        def guarded_open(path, mode="r", *a, **k):
            if isinstance(path, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+"):
                refuse(path)
            return real_open(path, mode, *a, **k)

        def guarded_os_open(path, flags, *a, **k):
            if flags & WRITES:
                refuse(path)
            return real_os_open(path, flags, *a, **k)

        def guarded(real):
            return lambda path, *a, **k: (refuse(path), real(path, *a, **k))[1]
        self.patches = [mock.patch("builtins.open", guarded_open), mock.patch("os.open", guarded_os_open),
                        *(mock.patch(f"os.{name}", guarded(getattr(os, name)))
                          for name in ("replace", "unlink", "mkdir", "rename", "rmdir"))]
        for patch in self.patches:
            patch.start()

    def __exit__(self, *exc: object) -> None:
        for patch in self.patches:
            patch.stop()


def _damage(run: str, how: str, name: str, cut: float, key: str, value: str) -> list:
    """Put copy `run` into one state a user's disk can hold: a file edited, truncated, garbled,
    deleted, made a FIFO, or the run locked by another writer. Returns what must stay open."""
    import yaml
    from siamdyn.runs import RunLock
    path = os.path.join(run, name)
    if how == "locked":
        return [RunLock(run).__enter__()]
    if how == "read-only":
        return [_read_only(run)]
    if how == "edited":
        doc = yaml.safe_load(open(os.path.join(run, "config.yaml")))
        try:  # a value as a hand edit would type it: YAML's reading of it, else the string itself
            doc["config"][key] = yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            doc["config"][key] = value
        open(os.path.join(run, "config.yaml"), "w").write(yaml.safe_dump(doc))
    elif how == "truncated" and os.path.exists(path):
        raw = open(path, "rb").read()
        open(path, "wb").write(raw[:int(len(raw) * cut)])
    elif how == "garbled" and os.path.exists(path):
        raw = bytearray(open(path, "rb").read())
        for i in range(0, len(raw), max(1, int(len(raw) * cut) or 1) * 7 + 1):
            raw[i] ^= 0xA5
        open(path, "wb").write(bytes(raw))
    elif how == "deleted" and os.path.exists(path):
        os.unlink(path)
    elif how == "fifo":
        if os.path.lexists(path):
            os.unlink(path)
        os.mkfifo(path)
    return []


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(how=st.sampled_from(["edited", "truncated", "garbled", "deleted", "fifo", "locked", "read-only"]),
       name=st.sampled_from(FILES), cut=st.floats(0, 1), key=st.sampled_from(KEYS[:-3]), value=VALUES,
       command=st.sampled_from(["resume", "probe", "export", "plot", "report"]))
# found by this test: `report` over a run whose config.yaml was truncated to nothing
@example(how="truncated", name="config.yaml", cut=0.0, key="backbone_width", value="0", command="report")
def test_no_run_directory_state_gives_a_traceback(victim, tmp_path_factory, how, name, cut, key, value, command):
    """Every command on a run directory in any of the states a disk can leave it in (a hand edit, a
    truncated or garbled file, a file gone, a FIFO in its place, a lock another writer holds, a read-only
    mount): exit 0
    or one line with exit 2, never a traceback, a hang or an internal error."""
    import shutil
    tmp = tmp_path_factory.mktemp("state")
    run = str(tmp / "exp" / "controls" / "simsiam" / "seed0")  # a run of an experiment, so `report` reads it
    shutil.copytree(victim, run)
    (tmp / "exp" / "experiment.json").write_text('{"sessions": [], "budget": "smoke", "seeds": null}')
    held = _damage(run, how, name, cut, key, value)
    argv = {"resume": ["train", "--out", run, "--resume", *QUICK, "--set", "max_steps=2"],
            "probe": ["probe", run, "--epochs", "1"], "export": ["export", run, "--out", str(tmp / "b.pt")],
            "plot": ["plot", run, "--out", str(tmp / "plots")],
            "report": ["report", str(tmp / "exp"), "--out", str(tmp / "report")]}[command]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    finally:
        for lock in held:
            lock.__exit__(None, None, None)
    text = err.getvalue()
    assert code in (0, 2) and "Traceback" not in text and "internal error" not in text, (how, name, argv, text)
    if code == 2:
        assert text.strip().splitlines()[-1].startswith("siamdyn: error: "), (how, name, argv, text)
        assert "(None)" not in text, (how, name, argv, text)  # an OSError without a cause is no message
    assert os.path.isdir(run)
