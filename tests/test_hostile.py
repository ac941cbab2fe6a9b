"""Hostile inputs: each meets a one-line error naming the problem and the fix,
exit code 2, no traceback, and no change to an existing run. `python -m tests.test_hostile`
prints the table of docs/reliability.md from the same cases, with the messages it got."""
import os
import pickle
import shutil
import sys
import zlib

import numpy as np
import pytest

from siamdyn.cli import main
from tests.conftest import run_digest
from tests.hostile_cases import (FAST, RUN_DIR_AND_DATA_CASES, SPECIAL_FILE_AND_COMMAND_CASES,
                                 _corrupt, _fmnist, _good_folder, _gz, _held_copy,
                                 _imagefolder, _train)

def _truncated_gz(tmp):
    d = _fmnist(tmp)
    path = os.path.join(d, "train-images-idx3-ubyte.gz")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
    return _train(tmp, d)


def _swapped_ckpt(tmp, victim):
    """A copy of the victim run whose checkpoint comes from a run of another backbone width."""
    import shutil
    other = os.path.join(tmp, "other")
    assert main(["train", "--data-dir", _fmnist(tmp), "--out", other, *FAST, "--set", "backbone_width=2"]) == 0
    copy = os.path.join(tmp, "copy")
    shutil.copytree(victim, copy)
    shutil.copy(os.path.join(other, "ckpt", "last.pt"), os.path.join(copy, "ckpt", "last.pt"))
    return ["train", "--out", copy, "--resume", "--data-dir", _fmnist(tmp), *FAST, "--set", "max_steps=4"]


def _bomb_png():
    """A 60-byte PNG whose header claims 20000 x 20000 pixels (400 M, past PIL's bomb limit)."""
    import struct

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _cifar(tmp, batch):
    root = os.path.join(tmp, "cifar")
    os.makedirs(root)
    good = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(os.path.join(root, name), "wb") as f:
            if name == "data_batch_1":
                f.write(batch)
            else:
                pickle.dump(good, f)
    return _train(tmp, root, "--dataset", "cifar10")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _config_file(tmp, text):
    path = os.path.join(tmp, "c.yaml")
    open(path, "w").write(text)
    return ["train", "--config", path, "--out", os.path.join(tmp, "new"), *FAST]


def _set(*pairs):
    return lambda tmp: _train(tmp, _fmnist(tmp), *[a for p in pairs for a in ("--set", p)])


def _out_is_file(tmp):
    path = os.path.join(tmp, "f")
    open(path, "w").close()
    return ["train", "--data-dir", _fmnist(tmp), "--out", path, *FAST]


def _victim_ckpt(tmp, victim, data):
    copy = os.path.join(tmp, "copy")
    shutil.copytree(victim, copy)
    open(os.path.join(copy, "ckpt", "last.pt"), "wb").write(data)
    return ["train", "--out", copy, "--resume", "--data-dir", _fmnist(tmp), *FAST, "--set", "max_steps=4"]


# (what, build argv from (tmp, victim run dir), expected part of the message)
CASES = [
    ("truncated .gz file", lambda t, v: _truncated_gz(t), "corrupt or truncated gzip"),
    ("random bytes in a .gz file", lambda t, v: _corrupt(t, "train-labels-idx1-ubyte.gz", os.urandom(300)),
     "corrupt or truncated gzip"),
    ("wrong IDX magic", lambda t, v: _corrupt(t, "train-images-idx3-ubyte.gz", _gz(b"\x00\x00\x09\x03" + bytes(12))),
     "IDX magic"),
    ("IDX body shorter than its header says", lambda t, v: _corrupt(t, "train-images-idx3-ubyte.gz", _gz(
        b"\x00\x00\x08\x03" + (6).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(100))), "truncated?"),
    ("image/label count mismatch", lambda t, v: _train(t, _fmnist(t, n_lab=5)), "images but"),
    ("label outside 0..9", lambda t, v: _corrupt(t, "train-labels-idx1-ubyte.gz", _gz(
        b"\x00\x00\x08\x01" + (40).to_bytes(4, "big") + bytes([1] * 39 + [200]))), "outside 0..9"),
    ("missing data file", lambda t, v: (os.unlink(os.path.join(_fmnist(t), "t10k-labels-idx1-ubyte.gz")),
                                        _train(t, os.path.join(t, "fm")))[1], "missing data file"),
    ("data dir does not exist", lambda t, v: _train(t, os.path.join(t, "nowhere")), "does not exist"),
    ("images too small for the model (4x4)", lambda t, v: _imagefolder(t, _good_folder((4, 4))), "too small"),
    ("image folder without class folders",
     lambda t, v: (os.makedirs(os.path.join(t, "empty")),
                   _train(t, os.path.join(t, "empty"), "--dataset", "imagefolder"))[1], "no class subfolders"),
    ("non-image file in an ImageFolder", lambda t, v: _imagefolder(t, {**_good_folder(), "a/notes.txt": b"hi"}),
     "non-image file"),
    ("unreadable image file", lambda t, v: _imagefolder(t, {**_good_folder(), "b/0.png": b"not a png"}),
     "unreadable image"),
    ("images of mixed sizes", lambda t, v: _imagefolder(t, {**_good_folder(), "b/0.png": (20, 20)}), "image_size"),
    ("test/ holds a class that train/ lacks",
     lambda t, v: _imagefolder(t, {**{f"train/{k}": x for k, x in _good_folder().items()},
                                   **{f"test/{k}": x for k, x in _good_folder().items()}, "test/c/0.png": (12, 12)}),
     "classes that"),
    ("test/ without train/", lambda t, v: _imagefolder(t, {f"test/{k}": x for k, x in _good_folder().items()}),
     "no train/"),
    ("decompression-bomb PNG", lambda t, v: _imagefolder(t, {**_good_folder(), "b/0.png": _bomb_png()}),
     "unreadable image"),
    ("CIFAR labels outside 0..9",
     lambda t, v: _cifar(t, pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 10, -1]})),
     "expected N integers in 0..9"),
    ("CIFAR labels that are strings",
     lambda t, v: _cifar(t, pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": ["a"] * 4})),
     "expected N integers in 0..9"),
    ("image_size for Fashion-MNIST", lambda t, v: _set("image_size=32")(t), "applies to imagefolder"),
    ("--data-dir that is a file",
     lambda t, v: (open(os.path.join(t, "f.gz"), "w").write("x"), _train(t, os.path.join(t, "f.gz")))[1],
     "is a file, not a folder"),
    ("--resume with a checkpoint of another width swapped in", lambda t, v: _swapped_ckpt(t, v),
     "no longer matches the config of its checkpoint (backbone_width: 2"),
    ("config YAML that is not a mapping (config: 5)",
     lambda t, v: (open(os.path.join(t, "c.yaml"), "w").write("config: 5\n"),
                   ["train", "--config", os.path.join(t, "c.yaml")])[1], "must hold a mapping"),
    ("--preset that contradicts the --config file",
     lambda t, v: (open(os.path.join(t, "c.yaml"), "w").write("preset: simsiam\n"),
                   ["train", "--preset", "byol", "--config", os.path.join(t, "c.yaml")])[1], "drop one of them"),
    ("CIFAR batch with a wrong key",
     lambda t, v: _cifar(t, pickle.dumps({b"pixels": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4})),
     "lacks keys"),
    ("CIFAR batch that is not a pickle", lambda t, v: _cifar(t, b"garbage" * 10), "corrupt CIFAR-10 batch"),
    ("CIFAR batch with a code-running pickle", lambda t, v: _cifar(t, pickle.dumps(_Evil())), "corrupt CIFAR-10 batch"),
    ("CIFAR batch with wrong data shape",
     lambda t, v: _cifar(t, pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4})),
     "expected uint8 (N, 3072)"),
    ("unknown preset", lambda t, v: ["train", "--preset", "simsaim", "--out", os.path.join(t, "new")],
     "did you mean 'simsiam'"),
    ("unknown method knob value", lambda t, v: _set("predictor=mpl")(t), "did you mean 'mlp'"),
    ("unknown --set key", lambda t, v: _set("learning_rate=0.1")(t), "unknown config key 'learning_rate'"),
    ("--set without '='", lambda t, v: _set("lr")(t), "--set expects key=value"),
    ("wrong type (lr=fast)", lambda t, v: _set("lr=fast")(t), "must be of type float"),
    ("wrong type (batch_size=3.5)", lambda t, v: _set("batch_size=3.5")(t), "must be of type int"),
    ("non-finite value (lr=nan)", lambda t, v: _set("lr=nan")(t), "finite"),
    ("tau outside [0, 1]", lambda t, v: _set("tau=1.5")(t), "tau=1.5 must be in [0, 1] (0: the target"),
    ("lr <= 0", lambda t, v: _set("lr=0")(t), "lr=0.0 must be in (0, 1e3]"),
    ("batch larger than the dataset", lambda t, v: _set("batch_size=128")(t), "larger than the 40 training images"),
    ("K < 1 for the x̄ target", lambda t, v: _set("mean_views=0")(t), "mean_views=0 must be in [1, 256] (K, "),
    ("negative epochs", lambda t, v: _train(t, _fmnist(t), "--epochs", "-1"), "epochs=-1 must be in [0, 1e6]"),
    ("EMA target with term 2 asked for", lambda t, v: _set("target=ema", "grad_terms=both")(t),
     "grad_terms must be predictor_branch"),
    ("probability outside [0, 1]", lambda t, v: _set("flip_p=1.5")(t), "flip_p=1.5 must be in [0, 1] (a probability)"),
    ("config file that is not YAML", lambda t, v: _config_file(t, "lr: [0.1\n"), "not valid YAML"),
    ("config file that does not exist", lambda t, v: ["train", "--config", os.path.join(t, "none.yaml")],
     "cannot read config file"),
    ("existing run dir without --overwrite", lambda t, v: ["train", "--out", v, "--data-dir", _fmnist(t), *FAST],
     "pass --overwrite"),
    ("--resume with an incompatible config",
     lambda t, v: ["train", "--out", v, "--resume", "--data-dir", _fmnist(t), *FAST, "--set", "lr=0.5"],
     "incompatible config: lr"),
    ("--resume where no checkpoint exists", lambda t, v: ["train", "--out", os.path.join(t, "new"), "--resume", *FAST],
     "cannot resume"),
    ("--resume from a damaged checkpoint", lambda t, v: _victim_ckpt(t, v, b"\x80\x02garbage"), "checkpoint"),
    ("--out is a file", lambda t, v: _out_is_file(t), "is a file"),
    ("plot of a folder that is not a run", lambda t, v: ["plot", t], "not a run directory"),
    # --- config values that no run can use (each names the field and what it accepts)
    ("precision that does not exist (fp16)", lambda t, v: _set("precision=fp16")(t), "choose one of: auto, fp32, bf16"),
    ("channels_last=yes", lambda t, v: _set("channels_last=yes")(t), "choose one of: auto, on, off"),
    ("device that does not exist (tpu)", lambda t, v: _set("device=tpu")(t), "choose one of: auto, cpu, cuda"),
    ("misspelt loss (cosin)", lambda t, v: _set("loss=cosin")(t), "did you mean 'cosine'"),
    ("misspelt target (emma)", lambda t, v: _set("target=emma")(t), "did you mean 'ema'"),
    ("misspelt optimizer (adam)", lambda t, v: _set("optimizer=adam")(t), "did you mean 'adamw'"),
    ("unknown symmetrize (avg)", lambda t, v: _set("symmetrize=avg")(t), "choose one of: mean, sum"),
    ("unknown grad_terms (none)", lambda t, v: _set("grad_terms=none")(t), "choose one of"),
    ("unknown init (xavier)", lambda t, v: _set("init=xavier")(t), "choose one of"),
    ("unknown dataset (mnist)", lambda t, v: _set("dataset=mnist")(t), "choose one of"),
    ("bool that is not one (deterministic=maybe)", lambda t, v: _set("deterministic=maybe")(t), "bool"),
    ("int given as a fraction (mean_views=2.5)", lambda t, v: _set("mean_views=2.5")(t), "must be of type int"),
    ("negative momentum", lambda t, v: _set("momentum=-1")(t), "momentum=-1.0 must be in [0, 1)"),
    ("negative weight decay", lambda t, v: _set("weight_decay=-0.1")(t), "weight_decay=-0.1 must be in [0, 10]"),
    ("negative warm-up", lambda t, v: _set("warmup_epochs=-1")(t), "warmup_epochs=-1.0 must be in [0, 1e6]"),
    ("zero temperature", lambda t, v: _set("temperature=0")(t), "temperature=0.0 must be in [1e-3, 1e3]"),
    ("knn_k = 0", lambda t, v: _set("knn_k=0")(t), "knn_k=0 must be in [1, 1e6]"),
    ("log_every = 0", lambda t, v: _set("log_every=0")(t), "log_every=0 must be in [1, 1e9]"),
    ("kNN targets that are not numbers", lambda t, v: _set("knn_targets=abc")(t), "comma-separated percentages"),
    ("kNN target above 100 %", lambda t, v: _set("knn_targets=150")(t), "must lie in (0, 100]"),
    ("collapse_patience = 0", lambda t, v: _set("collapse_patience=0")(t), "collapse_patience=0 must be in [1, 1e9]"),
    ("negative collapse_rank_floor", lambda t, v: _set("collapse_rank_floor=-1")(t),
     "collapse_rank_floor=-1.0 must be in [0, 65536] (0 turns the rank test off)"),
    ("negative ckpt_every", lambda t, v: _set("ckpt_every=-5")(t), "ckpt_every=-5 must be in [0, 1e9]"),
    ("negative threads", lambda t, v: _set("threads=-1")(t), "threads=-1 must be in [0, 4096]"),
    ("crop scale of 0", lambda t, v: _set("crop_scale_min=0")(t), "crop_scale_min=0.0 must be in (0, 1]"),
    ("crop scale min above max", lambda t, v: _set("crop_scale_min=0.9", "crop_scale_max=0.5")(t),
     "need 0 < crop_scale_min <= crop_scale_max"),
    ("crop ratio min above max", lambda t, v: _set("crop_ratio_min=2", "crop_ratio_max=1")(t),
     "need 0 < crop_ratio_min <= crop_ratio_max"),
    ("brightness jitter >= 1", lambda t, v: _set("brightness=1.5")(t), "brightness=1.5 must be in [0, 1)"),
    ("negative predictor lr scale", lambda t, v: _set("predictor_lr_scale=-1")(t),
     "predictor_lr_scale=-1.0 must be in [0, 1e3]"),
    ("backbone width 0", lambda t, v: _set("backbone_width=0")(t), "backbone_width=0 must be in [1, 1024]"),
    ("head dimension 0", lambda t, v: _set("proj_dim=0")(t), "proj_dim=0 must be in [1, 65536]"),
    ("negative limit", lambda t, v: _set("limit=-3")(t), "limit=-3 must be in [0, 1e9]"),
    ("batch of one image (BatchNorm needs two)", lambda t, v: _set("batch_size=1")(t),
     "batch_size=1 must be in [2, 2^20] (BatchNorm needs two samples)"),
    ("negative max_steps", lambda t, v: _set("max_steps=-1")(t), "max_steps=-1 must be in [0, 1e9]"),
    ("negative tau", lambda t, v: _set("tau=-0.1")(t), "tau=-0.1 must be in [0, 1]"),
    ("config file with an unknown key", lambda t, v: _config_file(t, "learning_rate: 0.1\n"),
     "unknown config key 'learning_rate'"),
    ("config file whose config: is a list", lambda t, v: _config_file(t, "config: [1, 2]\n"),
     "must hold a mapping"),
    # --- the other commands
    ("export of a folder that is not a run", lambda t, v: ["export", t], "not a run directory"),
    ("probe of a folder that is not a run", lambda t, v: ["probe", t], "not a run directory"),
    ("report of a folder without experiment.json", lambda t, v: ["report", t], "no experiment.json"),
    ("experiment that does not exist (H10)", lambda t, v: ["experiment", "H10", "--out", os.path.join(t, "e")],
     "unknown experiment 'H10'"),
    ("experiment budget that does not exist", lambda t, v: ["experiment", "H1", "--budget", "huge", "--out",
                                                           os.path.join(t, "e")], "unknown budget 'huge'"),
    ("experiment with --seeds 0", lambda t, v: ["experiment", "H1", "--seeds", "0", "--out", os.path.join(t, "e")],
     "--seeds 0 is out of range; pass an integer in [1, 1000]"),
    ("train into a run directory another process is writing", lambda t, v: _held(t, v), "is in use by process"),
    ("warm-up of 1e308 epochs", lambda t, v: _set("warmup_epochs=1e308")(t),
     "warmup_epochs=1e+308 must be in [0, 1e6]"),
    ("a seed beyond 64 bits", lambda t, v: _set("seed=123456789012345678901234567890")(t),
     "must be in (-2^40, 2^40)"),
    # --- every number has one declared range (config.py's knob bounds, bounds.py), NaN and inf included
    ("non-finite value (lr=inf)", lambda t, v: _set("lr=inf")(t), "lr=inf must be a finite number in (0, 1e3]"),
    ("inf for an int (seed=inf)", lambda t, v: _set("seed=inf")(t), "seed='inf' must be of type int in (-2^40, 2^40)"),
    ("a fraction in e-notation for an int (batch_size=2.55e1)", lambda t, v: _set("batch_size=2.55e1")(t),
     "batch_size='2.55e1' must be of type int"),
    ("momentum of 1", lambda t, v: _set("momentum=1")(t), "momentum=1.0 must be in [0, 1)"),
    ("kNN temperature whose weights overflow (0.001)", lambda t, v: _set("knn_temperature=0.001")(t),
     "knn_temperature=0.001 must be in [0.02, 1e3]"),
    ("synthetic images of 100000x100000", lambda t, v: _synthetic(t, "image_size=100000"),
     "image_size=100000 must be in [0, 1024]"),
    ("synthetic set of 10^8 images", lambda t, v: _synthetic(t, "limit=100000000"), "lower limit or image_size"),
    ("--nproc 0", lambda t, v: ["train", "--nproc", "0", "--out", os.path.join(t, "new")],
     "--nproc 0 is out of range; pass an integer in [1, 1024]"),
    ("--nproc -2", lambda t, v: ["train", "--nproc", "-2", "--out", os.path.join(t, "new")],
     "--nproc -2 is out of range"),
    ("experiment with --seeds 10^12", lambda t, v: ["experiment", "H1", "--seeds", "1000000000000", "--out",
                                                    os.path.join(t, "e")], "--seeds 1000000000000 is out of range"),
    ("toy model with --t-end inf", lambda t, v: ["toy", "--t-end", "inf", "--no-plots"], "--t-end inf is out of range"),
    # --- more config values no run can use
    ("unknown tau_schedule (linear)", lambda t, v: _set("tau_schedule=linear")(t), "choose one of: fixed, cosine"),
    ("unknown projector (mlp3)", lambda t, v: _set("projector=mlp3")(t), "choose one of: simsiam, byol"),
    ("crop aspect ratio 0", lambda t, v: _set("crop_ratio_min=0")(t), "crop_ratio_min=0.0 must be in [0.1, 10]"),
    ("blur probability 2", lambda t, v: _set("blur_p=2")(t), "blur_p=2.0 must be in [0, 1] (a probability)"),
    ("negative knn_every", lambda t, v: _set("knn_every=-1")(t), "knn_every=-1 must be in [0, 1e6]"),
    ("negative rank_every", lambda t, v: _set("rank_every=-1")(t), "rank_every=-1 must be in [0, 1e9]"),
    ("compile=maybe", lambda t, v: _set("compile=maybe")(t), "choose one of: auto, on, off"),
    ("K = 1000 views for the x̄ target", lambda t, v: _set("mean_views=1000")(t), "mean_views=1000 must be in [1, 256]"),
    ("negative heldout_images", lambda t, v: _set("heldout_images=-1")(t), "heldout_images=-1 must be in [0, 1e9]"),
    ("negative probe_first", lambda t, v: _set("probe_first=-1")(t), "probe_first=-1 must be in [0, 1e9]"),
    *RUN_DIR_AND_DATA_CASES,
    *SPECIAL_FILE_AND_COMMAND_CASES,
]


def _synthetic(tmp, *pairs):
    return ["train", "--dataset", "synthetic", "--out", os.path.join(tmp, "new"), *FAST,
            *[a for p in pairs for a in ("--set", p)]]


def _held(tmp, victim):
    return ["train", "--out", _held_copy(tmp, victim), "--resume", "--data-dir", _fmnist(tmp), *FAST, "--set",
            "max_steps=4"]


def _digest(folder):
    return run_digest(folder)


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("victim"))
    out = os.path.join(tmp, "run")
    assert main(["train", "--data-dir", _fmnist(tmp), "--out", out, *FAST]) == 0
    return out


def _out_state(argv):
    """What the command's --out holds (None: it does not exist): a start that fails must leave it so."""
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    return None if out is None or not os.path.lexists(out) else (os.path.isdir(out), _digest(out))


def run_case(build, tmp, victim, capsys):
    before = _digest(victim)
    argv = build(tmp, victim)
    out_before = _out_state(argv)
    capsys.readouterr()  # what building the case printed (a helper run's own lines) is not the case's output
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert _digest(victim) == before, "the existing run changed"
    assert _out_state(argv) == out_before, "the command's --out changed (a failed start must leave it as it was)"
    return code, err, argv


@pytest.mark.parametrize("what,build,expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_gets_one_clean_line(what, build, expected, tmp_path, victim, capsys):
    code, err, argv = run_case(build, str(tmp_path), victim, capsys)
    assert code == 2, err
    assert err.startswith("siamdyn: error: ") and "\n" not in err and "Traceback" not in err, err
    assert expected in err, err
    if "--out" in argv and "--resume" not in argv and "new" in argv[argv.index("--out") + 1]:
        assert not os.path.exists(argv[argv.index("--out") + 1]), "a failed run left a run directory behind"


def test_no_run_goes_into_the_filesystem_root_or_a_home_folder():
    """`train --out /` or `--out ~` is refused by the check that runs before anything else (it has
    no side effects, so it is called directly: a regression must not write into /)."""
    from siamdyn.errors import SiamdynError
    from siamdyn.experiments.runner import check_experiment_dir
    from siamdyn.runs import check_run_dir
    for folder in ("/", os.path.expanduser("~")):
        if os.listdir(folder):
            for overwrite in (False, True):
                with pytest.raises(SiamdynError, match="is a folder of other files"):
                    check_run_dir(folder, overwrite=overwrite, resume=False)
            with pytest.raises(SiamdynError, match="not an experiment folder"):  # `experiment --out /` wrote there
                check_experiment_dir(folder)


def test_the_reliability_table_holds_every_case():
    """docs/reliability.md's table is generated from CASES (`python -m tests.test_hostile`): a case added
    here without regenerating it, or a table cut short, fails."""
    import re
    doc = open(os.path.join(os.path.dirname(__file__), "..", "docs", "reliability.md"), encoding="utf-8").read()
    rows = re.findall(r"^\| \d+ \| (.+?) \| `siamdyn: error: ", doc, flags=re.M)
    assert len(CASES) >= 150 and rows == [what.replace("|", "\\|") for what, _, _ in CASES]


if __name__ == "__main__":  # print the reliability table with the messages actually produced
    import tempfile

    class _Capture:
        def readouterr(self):  # like capsys: what was printed since the last call
            err = sys.stderr.getvalue()
            sys.stderr.seek(0)
            sys.stderr.truncate()
            return type("R", (), {"err": err})()

    import io
    rows = ["| # | hostile input | error message (exit code) | test |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as vt:
        victim_dir = os.path.join(vt, "run")
        main(["train", "--data-dir", _fmnist(vt), "--out", victim_dir, *FAST])
        real_err = sys.stderr
        for i, (what, build, _) in enumerate(CASES, 1):
            with tempfile.TemporaryDirectory() as t:
                sys.stderr = io.StringIO()
                code, err, _ = run_case(build, t, victim_dir, _Capture())
                sys.stderr = real_err
            err = err.replace(t, "…").replace(vt, "…").replace("|", "\\|").replace("`", "'")
            rows.append(f"| {i} | {what} | `{err}` ({code}) | "
                        f"`tests/test_hostile.py::test_hostile_input_gets_one_clean_line[{what}]` |")
    print("\n".join(rows))
