"""One top-level handler: Ctrl-C at any moment exits 130 with one line; a bug (any exception
that is not a SiamdynError) exits 1 with one line naming it and a file holding its traceback.
(Ctrl-C during training steps, which stops at a checkpoint, is tests/test_reliability.py's.)"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import siamdyn.train
from siamdyn.cli import main
from siamdyn.toplevel import TRACEBACK_FILE
from tests.conftest import TINY

SCRIPT = os.path.join(os.path.dirname(sys.executable), "siamdyn")  # the console script users run
COMMAND = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "siamdyn"]
LINE = re.compile(r"siamdyn: internal error: (\S+): (.*); traceback saved to (.+)")


def _torch_loading(pid: int) -> bool:
    """torch's shared libraries are mapped: the process is inside `import torch`."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "libtorch" in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("moment", ["after 0.5 s", "while torch loads"])
def test_ctrl_c_during_imports_exits_130_with_one_line(tmp_path, moment):
    # preexec_fn: Ctrl-C reaches the command as in a terminal, even where this test runs with SIGINT
    # ignored (a background job of a non-interactive shell), which the child would inherit
    proc = subprocess.Popen([*COMMAND, "train", "--dataset", "synthetic", "--out", str(tmp_path / "run"),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if moment == "after 0.5 s" or not os.path.exists(f"/proc/{proc.pid}/maps"):
        time.sleep(0.5)  # Python is up (its SIGINT handler installed) and importing
    else:
        deadline = time.time() + 30
        while not _torch_loading(proc.pid) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.002)
    assert proc.poll() is None, "the command ended before the Ctrl-C"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and err.strip() == "siamdyn: interrupted (Ctrl-C)", err[-2000:]
    assert not os.path.exists(tmp_path / "run")


def test_ctrl_c_before_the_steps_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(siamdyn.train, "train", interrupted)  # as if Ctrl-C came while the data loads
    assert main(["train", "--dataset", "synthetic", "--out", "nowhere"]) == 130
    assert capsys.readouterr().err.strip() == "siamdyn: interrupted (Ctrl-C)"


def test_ctrl_c_during_the_final_knn_says_the_run_is_complete(monkeypatch, tmp_path, capsys):
    """A stop that arrives after the last step (during the final kNN) used to print "stopping after this
    step with a checkpoint" and then finish with exit 0 as if nothing had been said."""
    import signal
    real = siamdyn.train.evaluate

    def interrupted_knn(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the StopSignals handler takes it: a real Ctrl-C at this moment
        return real(*args, **kwargs)
    monkeypatch.setattr(siamdyn.train, "evaluate", interrupted_knn)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--out", str(out), "--set", "max_steps=2", "--set", "knn_every=0",
                 "--set", "backbone_width=2", "--set", "batch_size=16", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "SIGINT received" in err and "the stop came after the last step (2); the run is complete" in err, err
    assert (out / "summary.json").exists()


def test_a_bug_before_the_run_is_one_line_and_a_temp_file_with_the_traceback(monkeypatch, tmp_path, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\non two lines")
    monkeypatch.setattr(siamdyn.train, "train", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the temp file goes
    assert main(["train", "--dataset", "synthetic", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    kind, message, path = LINE.fullmatch(err).groups()
    assert (kind, message) == ("RuntimeError", "boom on two lines")
    assert os.path.dirname(path) == str(tmp_path) and os.path.basename(path).startswith("siamdyn-traceback-")
    text = open(path).read()
    assert text.startswith("Traceback (most recent call last):") and "in broken" in text
    assert text.rstrip().endswith("RuntimeError: boom\non two lines")
    assert not os.path.exists(tmp_path / "run")


def test_a_bug_during_a_run_saves_its_traceback_in_the_run_directory(monkeypatch, tmp_path, capsys):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("the summary divided by zero")
    monkeypatch.setattr(siamdyn.train, "write_summary", broken)  # the run's last act, after its steps
    out = tmp_path / "run"
    values = {**TINY, "max_steps": 2, "knn_every": 0, "probe_every": 0}
    sets = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "--out", str(out), "--no-progress", *sets]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the run's own lines (precision …)
    assert LINE.fullmatch(last).groups() == ("ZeroDivisionError", "the summary divided by zero",
                                             str(out / TRACEBACK_FILE)), last
    assert "ZeroDivisionError: the summary divided by zero" in (out / TRACEBACK_FILE).read_text()
    # --overwrite starts afresh: the old run's traceback goes with it
    monkeypatch.undo()
    assert main(["train", "--out", str(out), "--no-progress", "--overwrite", *sets]) == 0
    assert not (out / TRACEBACK_FILE).exists()
