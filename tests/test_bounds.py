"""One bound on every number: each numeric config field declares a finite valid range, and
`siamdyn train --set field=value` with NaN, ±inf, 0, -1 or 1e300 starts only when the value
lies in it; otherwise it exits 2 with one line naming the field and the range, before any
data is loaded or any run directory made. The walk reads the fields from `Config` itself,
so a field added later is covered (and must declare its bounds). The command-line flags
that take numbers are bounded the same way."""
import math
import os
from dataclasses import fields

import pytest

import siamdyn.train
from siamdyn.bounds import Bounds
from siamdyn.cli import main
from siamdyn.config import Config
from siamdyn.presets import PRESETS

NUMERIC = [f for f in fields(Config) if type(f.default) in (int, float)]
HOSTILE = ["nan", "inf", "-inf", "0", "-1", "1e300"]


@pytest.fixture
def started(monkeypatch):
    """The runs `train` would have started: a start that passes validation stops there."""
    calls = []
    monkeypatch.setattr(siamdyn.train, "train", lambda cfg, out, **kw: calls.append((cfg, out)) or {})
    return calls


def _as_field_type(f, raw: str):
    """What `--set` should make of `raw` for field `f`, or None where the type cannot hold it."""
    number = float(raw)
    if type(f.default) is float:
        return number
    return int(number) if number.is_integer() else None  # int fields: no NaN, no inf


def _inside(value, b: Bounds) -> bool:
    """The range test written out again, independently of Bounds.__contains__."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    low = value > b.lo if b.lo_open else value >= b.lo
    high = value < b.hi if b.hi_open else value <= b.hi
    return low and high


def test_every_numeric_field_declares_a_finite_range_holding_its_default():
    assert len(NUMERIC) > 30
    for f in NUMERIC:
        b = f.metadata["bounds"]
        assert b is not None, f"{f.name} has no bounds: add bounds=... to its knob()"
        assert math.isfinite(b.lo) and math.isfinite(b.hi), f.name
        assert _inside(f.default, b), f"{f.name}'s default {f.default} is outside {b.text}"
    for preset in PRESETS:  # every named point of the design space is valid
        Config.from_preset(preset)


@pytest.mark.parametrize("raw", HOSTILE)
def test_every_numeric_field_starts_only_in_range(raw, tmp_path, capsys, started):
    for f in NUMERIC:
        out = tmp_path / f"{f.name}-{raw}"
        code = main(["train", "--dataset", "synthetic", "--out", str(out), "--no-progress",
                     "--set", f"{f.name}={raw}"])
        err = capsys.readouterr().err.strip()
        b = f.metadata["bounds"]
        if _inside(_as_field_type(f, raw), b):
            assert code == 0 and started and started[-1][1] == str(out), (f.name, raw, err)
            assert getattr(started.pop()[0], f.name) == float(raw), (f.name, raw)
            continue
        assert code == 2, (f.name, raw, err)
        assert err.startswith(f"siamdyn: error: {f.name}=") and "\n" not in err and "Traceback" not in err, err
        assert b.text in err, (f.name, raw, err)
        assert not os.path.exists(out), f"a refused start made {out}"
        assert not started, (f.name, raw)


def _refused(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("siamdyn: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv,expected", [
    (["train", "--nproc", "0"], "--nproc 0 is out of range; pass an integer in [1, 1024]"),
    (["train", "--nproc", "-2"], "--nproc -2 is out of range"),
    (["train", "--nproc", "1e300"], "--nproc 1e+300 is out of range"),
    (["train", "--nproc", "two"], "--nproc 'two' is not an integer"),
    (["experiment", "H1", "--seeds", "1000000000000"], "--seeds 1000000000000 is out of range; pass an integer in "
                                                      "[1, 1000]"),
    (["demo", "--steps", "0"], "--steps 0 is out of range"),
    (["probe", "nowhere", "--epochs", "-1"], "--epochs -1 is out of range"),
    (["toy", "--t-end", "inf", "--no-plots"], "--t-end inf is out of range; pass a number in (0, 1e3]"),
    (["toy", "--lr", "nan", "--no-plots"], "--lr nan is out of range"),
    (["toy", "--phi0", "1e300", "--no-plots"], "--phi0 1e+300 is out of range"),
    (["train", "--epochs", "1000000000"], "epochs=1000000000 must be in [0, 1e6]"),
    (["train", "--limit", "-5"], "limit=-5 must be in [0, 1e9]"),
    (["train", "--set", "image_size=100000"], "image_size=100000 must be in [0, 1024]"),  # once a 24 TB allocation
    (["train", "--set", "limit=100000000"], "synthetic data of 100000000 images of 28x28 would need"),
    (["train", "--set", "seed=inf"], "seed='inf' must be of type int in (-2^40, 2^40)"),  # once an OverflowError
    (["train", "--set", "batch_size=2.55e1"], "batch_size='2.55e1' must be of type int"),  # once truncated to 25
])
def test_numbers_on_the_command_line_are_bounded(argv, expected, tmp_path, capsys, started):
    out = tmp_path / "run"
    if argv[0] == "train":
        argv = [*argv, "--dataset", "synthetic", "--out", str(out)]
    if argv[0] == "experiment":
        argv = [*argv, "--out", str(out)]
    assert expected in _refused(argv, capsys)
    assert not os.path.exists(out) and not started


def test_in_range_flags_still_start(tmp_path, capsys, started):
    assert main(["train", "--dataset", "synthetic", "--nproc", "1", "--epochs", "10", "--out", str(tmp_path)]) == 0
    assert started[0][0].epochs == 10


def test_every_number_of_the_linear_model_is_bounded(capsys):
    """`siamdyn linear --set`: the same walk over LinearSetup's numbers (the eigensolver used to fail
    on lr=nan with an internal error); a value in range is accepted by the same check."""
    from siamdyn.theory.cli import linear_setup_from
    from siamdyn.theory.linear import LINEAR_BOUNDS, LinearSetup
    numeric = [f for f in fields(LinearSetup) if type(f.default) in (int, float)]
    assert sorted(f.name for f in numeric) == sorted(LINEAR_BOUNDS)  # a new number must declare its range
    for f in numeric:
        b = Bounds.parse(LINEAR_BOUNDS[f.name])
        assert _inside(f.default, b), f.name
        for raw in HOSTILE:
            value = _as_field_type(f, raw)
            if _inside(value, b):
                linear_setup_from([f"{f.name}={raw}"])
                continue
            code = main(["linear", "--set", f"{f.name}={raw}", "--no-plots"])
            err = capsys.readouterr().err.strip()
            assert code == 2 and err.startswith("siamdyn: error: ") and "\n" not in err, (f.name, raw, err)
            assert f.name in err, (f.name, raw, err)
