"""One logger interface for the instruments: a plain callable, TensorBoard and W&B (offline), in siamdyn's
own loop (`wandb=PROJECT`, as `tensorboard=true`) and outside it; values that are not finite arrive as
None (null), never inf; and `import siamdyn` imports none of the optional packages."""
import glob
import json
import os
import struct
import subprocess
import sys

import pytest
import torch

from siamdyn.cli import main
from siamdyn.config import Config
from siamdyn.errors import SiamdynError
from siamdyn.loggers import TensorBoardLogger, WandbLogger, as_logger, flat_metrics, run_log
from siamdyn.runs import METRICS_FILE, MetricsLog, read_metrics
from siamdyn.train import train
from tests.conftest import TINY

RECORD = {"loss": torch.tensor(-0.5), "g2_over_g1/stem": float("inf"), "cos": float("nan"), "ratio": None,
          "knn": {"top1": 71.5}, "finite": True, "preset": "simsiam", "steps": 3}
CLEAN = {"loss": -0.5, "g2_over_g1/stem": None, "cos": None, "ratio": None, "knn/top1": 71.5, "steps": 3.0}


def test_a_callable_gets_flat_json_safe_numbers():
    got = []
    logger = as_logger([lambda m, s: got.append((m, s)), None])
    logger.log(RECORD, 7)
    assert got == [(CLEAN, 7)] and flat_metrics(RECORD) == CLEAN
    json.dumps(got, allow_nan=False)  # strict JSON: no inf, no NaN
    with pytest.raises(TypeError, match="log\\(metrics, step\\)"):
        as_logger(3)


def test_tensorboard_logger_writes_the_numbers_and_leaves_nulls_out(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    logger = as_logger(TensorBoardLogger(str(tmp_path)))
    logger.log(RECORD, 1)
    logger.log({"loss": -0.75}, 2)
    logger.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["knn/top1", "loss", "steps"]
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, -0.5), (2, -0.75)]


def _wandb_history(folder: str) -> list[dict]:
    """The history records of the offline W&B run under `folder`, read from its .wandb file (LevelDB's log
    format: 32 KiB blocks of chunks with a 7-byte header, after a 7-byte W&B header)."""
    import wandb
    from wandb.proto import wandb_internal_pb2 as pb
    wandb.teardown()  # finish() can return before W&B's service has written the file; its shutdown waits
    (path,) = glob.glob(os.path.join(folder, "wandb", "offline-run-*", "run-*.wandb"))
    data, pos, chunk, rows = open(path, "rb").read(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def _isolated_wandb(tmp_path, monkeypatch, mode: str, **extra: str):
    """W&B as this test sets it: none of the developer's WANDB_ variables (credentials, server), its files
    under tmp_path, no error reports sent; W&B's process-wide state reset before and after."""
    wandb = pytest.importorskip("wandb")  # a guard only: the test extra installs it
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    env = {"WANDB_MODE": mode, "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
           "WANDB_ERROR_REPORTING": "false", "WANDB_CONFIG_DIR": str(tmp_path / "config"),
           "WANDB_CACHE_DIR": str(tmp_path / "cache"), **extra}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    wandb.teardown()  # W&B keeps the settings of its first run in the process: read this test's afresh
    yield tmp_path
    wandb.teardown()


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    yield from _isolated_wandb(tmp_path, monkeypatch, "offline")


@pytest.fixture
def wandb_online_without_account(tmp_path, monkeypatch):
    # no API key where W&B looks for one: the environment (cleared) and ~/.netrc (HOME is tmp_path)
    yield from _isolated_wandb(tmp_path, monkeypatch, "online", HOME=str(tmp_path), NETRC=str(tmp_path / "netrc"))


def test_wandb_logger_offline_records_nulls_not_inf(wandb_offline):
    logger = WandbLogger(project="siamdyn-test")
    logger.log(RECORD, 1)
    logger.log({"loss": -0.75}, 4)
    logger.close()
    rows = _wandb_history(str(wandb_offline))
    assert [(r["_step"], r["loss"]) for r in rows] == [(1, -0.5), (4, -0.75)]
    assert {k: rows[0][k] for k in CLEAN} == CLEAN


def test_the_run_log_of_siamdyn_train_mirrors_every_line_to_wandb_and_tensorboard(wandb_offline):
    """What `siamdyn train --set wandb=PROJECT --set tensorboard=true` writes through (train_start.begin)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = wandb_offline / "run"
    run.mkdir()
    cfg = Config.from_preset("simsiam", dict(TINY, wandb="siamdyn-test", tensorboard=True))
    log = run_log(MetricsLog(str(run / METRICS_FILE)), cfg, str(run))
    for step in (1, 2, 3):
        log.write({"step": step, "loss": -0.1 * step, "g2_over_g1/stem": None if step == 2 else 0.5})
    log.write({"step": 3, "knn": {"top1": 40.0}, "epoch": 0.2})
    log.sync()
    log.close()
    lines = read_metrics(str(run))
    history = _wandb_history(str(wandb_offline))
    # two lines of one step are one row of W&B's history
    assert [(r["_step"], r["loss"]) for r in history] == [(r["step"], r["loss"]) for r in lines if "loss" in r]
    assert history[1]["g2_over_g1/stem"] is None and history[2]["knn/top1"] == 40.0 and len(lines) == 4
    assert "wandb" not in os.listdir(run)  # W&B's files stay where W&B keeps them, not in the run directory
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("g2_over_g1/stem")] == [1, 3]  # no null in TensorBoard: left out


def test_wandb_without_the_package_is_a_one_line_error_before_the_run_starts(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(SiamdynError, match=r"pip install 'siamdyn\[wandb\]'"):
        train(Config.from_preset("simsiam", dict(TINY, wandb="p")), str(tmp_path / "r"), progress=False)
    assert not os.path.exists(tmp_path / "r")


def test_import_siamdyn_imports_no_optional_package():
    code = ("import sys, siamdyn, siamdyn.loggers, siamdyn.probes.hooks; siamdyn.CollapseMonitor; "
            "print(sorted(m for m in ('lightning', 'wandb', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_docs_logger_snippet_runs_as_written(tmp_path, monkeypatch):
    import re
    monkeypatch.chdir(tmp_path)
    text = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "api.md"), encoding="utf-8").read()
    scope: dict = {}
    exec(next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "as_logger([" in b), scope)
    assert scope["rows"] == [(10, {"loss": -0.9, "g2_over_g1": None, "knn/top1": 71.5})]
    assert os.listdir(tmp_path / "runs" / "tb")


def test_train_mirrors_every_metrics_line_to_the_loggers_it_is_given(tmp_path):
    """`train(cfg, out, loggers=fn)`: the Python API's way to the same sinks as `--set wandb=…`."""
    got: list[tuple[dict, int]] = []
    with pytest.raises(TypeError, match="log\\(metrics, step\\)"):  # a wrong kind fails before the run starts
        train(Config.from_preset("simsiam", dict(TINY)), str(tmp_path / "bad"), progress=False, loggers=3)
    assert not os.path.exists(tmp_path / "bad")
    train(Config.from_preset("simsiam", dict(TINY)), str(tmp_path / "r"), progress=False,
          loggers=[lambda m, s: got.append((m, s))])
    lines = [line for line in read_metrics(str(tmp_path / "r")) if "loss" in line]
    assert lines and [(s, m["loss"]) for m, s in got if "loss" in m] == [(r["step"], r["loss"]) for r in lines]
    json.dumps(got, allow_nan=False)


def test_wandb_without_an_account_is_one_line_not_a_traceback(wandb_online_without_account, capsys):
    """Online W&B with no API key (a fresh machine, CI): the run does not start, and the user reads what to do."""
    out = str(wandb_online_without_account / "run")
    assert main(["train", "--out", out, "--dataset", "synthetic", "--set", "backbone_width=2", "--set",
                 "max_steps=1", "--set", "wandb=siamdyn-test", "--no-progress"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("siamdyn: error: W&B could not start a run (") and "WANDB_MODE=offline" in line
    assert not os.path.exists(out)  # a start that fails leaves --out as it was
