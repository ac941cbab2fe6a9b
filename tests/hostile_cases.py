"""The builders of tests/test_hostile.py's cases (each returns the argv of one hostile command)
and the cases of run directories and of data read as it is, kept here so that file stays short."""
import gzip
import io
import os
import shutil
import zlib

import numpy as np

from tests.test_data import fake_fmnist

# A tiny finished run that every case must leave untouched, and the knobs that make one.
FAST = ["--set", "backbone_width=4", "--set", "proj_hidden=16", "--set", "proj_dim=16", "--set", "pred_hidden=8",
        "--set", "batch_size=16", "--set", "max_steps=2", "--set", "knn_k=5", "--no-progress"]


def _fmnist(tmp, n_img=40, n_lab=40):
    d = os.path.join(tmp, "fm")
    fake_fmnist(d, n_img=n_img, n_lab=n_lab, split="train")
    fake_fmnist(d, split="t10k")
    return d


def _train(tmp, data_dir, *extra):
    return ["train", "--data-dir", data_dir, "--out", os.path.join(tmp, "new"), *FAST, *extra]


def _corrupt(tmp, name, data, **kw):
    d = _fmnist(tmp, **kw)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    return _train(tmp, d)


def _gz(raw):
    return gzip.compress(raw)


def _imagefolder(tmp, files):
    from PIL import Image
    root = os.path.join(tmp, "imgs")
    for rel, what in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(what, tuple):
            Image.fromarray(np.full((*what, 3), 128, np.uint8)).save(path)
        else:
            open(path, "wb").write(what)
    return _train(tmp, root, "--dataset", "imagefolder")


def _good_folder(size=(12, 12)):
    return {f"{c}/{i}.png": size for c in ("a", "b") for i in range(12)}


_HELD = []  # the locks _held takes stay open until the case has run


def _held_copy(tmp, victim):
    """A copy of the victim whose lock another writer holds (an open RunLock, as a running train has)."""
    from siamdyn.runs import RunLock
    copy = os.path.join(tmp, "copy")
    shutil.copytree(victim, copy)
    _HELD[:] = [RunLock(copy).__enter__()]
    return copy


def _into_folder(tmp, *names):
    """train --out a folder that holds `names` (a name ending in / is a folder)."""
    folder = os.path.join(tmp, "folder")
    for name in names:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not name.endswith("/"):
            open(path, "w").close()
    return ["train", "--data-dir", _fmnist(tmp), "--out", folder, *FAST]


def _edited_config(tmp, victim, key, value):
    """A copy of the victim whose config.yaml was edited by hand after its checkpoint was written."""
    import yaml
    copy = os.path.join(tmp, "copy")
    shutil.copytree(victim, copy)
    path = os.path.join(copy, "config.yaml")
    doc = yaml.safe_load(open(path))
    doc["config"][key] = value
    open(path, "w").write(yaml.safe_dump(doc, sort_keys=False))
    return ["train", "--out", copy, "--resume", "--data-dir", _fmnist(tmp), *FAST, "--set", "max_steps=4"]


def _never_checkpointed(tmp, victim):
    """A copy of the victim as a run killed before its first checkpoint leaves it: no ckpt/last.pt."""
    copy = os.path.join(tmp, "copy")
    shutil.copytree(victim, copy)
    os.unlink(os.path.join(copy, "ckpt", "last.pt"))
    return ["train", "--out", copy, "--resume", "--data-dir", _fmnist(tmp), *FAST]


def _empty_test_split(tmp):
    d = _fmnist(tmp)
    fake_fmnist(d, n_img=0, n_lab=0, split="t10k")
    return _train(tmp, d)


def _bomb_gz(megabytes):
    """The IDX header of 40 images, then `megabytes` MB of zeros: ~1/1000 of that in gzip."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [z.compress(b"\x00\x00\x08\x03" + (40).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)]
    parts += [z.compress(bytes(1 << 20)) for _ in range(megabytes)]
    return b"".join(parts) + z.flush()


def _second_member(tmp):
    d = _fmnist(tmp)
    path = os.path.join(d, "train-labels-idx1-ubyte.gz")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw + _gz(b"appended"))
    return _train(tmp, d)


def _float_tiff():
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12), 0.5, np.float32)).save(buf, format="TIFF")
    return buf.getvalue()


def _fifo_instead(path):
    """`path` replaced by a FIFO: opening it for reading would block until a writer comes (forever)."""
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path)
    return path


def _run_with_fifo(tmp, victim, rel):
    """A copy of the victim whose file `rel` is a FIFO."""
    copy = os.path.join(tmp, "copy")
    shutil.copytree(victim, copy)
    _fifo_instead(os.path.join(copy, rel))
    return copy


def _emptied(tmp, victim, rel):
    """A copy of the victim whose file `rel` is empty."""
    copy = os.path.join(tmp, "copy")
    shutil.copytree(victim, copy)
    open(os.path.join(copy, rel), "w").close()
    return copy


def _into_fifo_log(tmp):
    """train --out a folder that holds only a FIFO named metrics.jsonl (a run's own name: not foreign)."""
    folder = os.path.join(tmp, "fifo-log")
    os.makedirs(folder)
    _fifo_instead(os.path.join(folder, "metrics.jsonl"))
    return ["train", "--data-dir", _fmnist(tmp), "--out", folder, *FAST]


def _resume(tmp, run):
    return ["train", "--out", run, "--resume", "--data-dir", _fmnist(tmp), *FAST, "--set", "max_steps=4"]


def _config_path(tmp, make):
    path = os.path.join(tmp, "c.yaml")
    make(path)
    return ["train", "--config", path, "--out", os.path.join(tmp, "new"), *FAST]


def _experiment_into(tmp, victim, what):
    """`experiment H1 --budget smoke --out X` where X is the victim run, a file or a folder of other files."""
    out = {"run": victim, "file": os.path.join(tmp, "f"), "folder": os.path.join(tmp, "src")}[what]
    if what == "file":
        open(out, "w").close()
    if what == "folder":
        os.makedirs(os.path.join(out, "siamdyn"))
        open(os.path.join(out, "setup.py"), "w").close()
    return ["experiment", "H1", "--budget", "smoke", "--out", out]


def _linear(*pairs):
    return lambda t, v: ["linear", "--no-plots", "--out", os.path.join(t, "lin"), *[a for p in pairs
                                                                                 for a in ("--set", p)]]


NOT_REGULAR = "not a regular file; siamdyn reads files only"
# Special files where a file is read (inputs.py): each used to hang or fail with a traceback.
SPECIAL_FILE_AND_COMMAND_CASES = [
    ("a FIFO named *.png in an ImageFolder",
     lambda t, v: (_imagefolder(t, _good_folder()), _fifo_instead(os.path.join(t, "imgs", "a", "99.png")),
                   _train(t, os.path.join(t, "imgs"), "--dataset", "imagefolder"))[2], "is a FIFO (named pipe), not a"),
    ("a Fashion-MNIST .gz that is a FIFO",
     lambda t, v: (_fifo_instead(os.path.join(_fmnist(t), "train-images-idx3-ubyte.gz")),
                   _train(t, os.path.join(t, "fm")))[1], NOT_REGULAR),
    ("--config that is a FIFO", lambda t, v: _config_path(t, os.mkfifo), "a FIFO (named pipe), not a regular file"),
    ("--config /dev/zero (a device that never ends)",
     lambda t, v: ["train", "--config", "/dev/zero", "--out", os.path.join(t, "new")], "a character device"),
    ("--config that is a binary file", lambda t, v: _config_path(t, lambda p: open(p, "wb").write(bytes(range(256)))),
     "is not UTF-8 text; pass a YAML file"),
    ("--config that is a folder", lambda t, v: _config_path(t, os.mkdir), "a folder, not a regular file"),
    ("--resume of a run whose ckpt/last.pt is a FIFO", lambda t, v: _resume(t, _run_with_fifo(t, v, "ckpt/last.pt")),
     NOT_REGULAR),
    ("--resume of a run whose config.yaml is a FIFO", lambda t, v: _resume(t, _run_with_fifo(t, v, "config.yaml")),
     "config.yaml: a FIFO (named pipe), not a regular file"),
    ("probe of a run whose ckpt/last.pt is a FIFO", lambda t, v: ["probe", _run_with_fifo(t, v, "ckpt/last.pt")],
     NOT_REGULAR),
    ("export of a run whose ckpt/last.pt is a FIFO",
     lambda t, v: ["export", _run_with_fifo(t, v, "ckpt/last.pt"), "--out", os.path.join(t, "b.pt")], NOT_REGULAR),
    ("plot of a run whose metrics.jsonl is a FIFO",
     lambda t, v: ["plot", _run_with_fifo(t, v, "metrics.jsonl"), "--out", os.path.join(t, "plots")], NOT_REGULAR),
    ("--resume of a run whose .lock is a FIFO", lambda t, v: _resume(t, _run_with_fifo(t, v, ".lock")),
     ".lock is a FIFO (named pipe), not a regular file"),
    ("train into a folder whose metrics.jsonl is a FIFO", lambda t, v: _into_fifo_log(t),
     "metrics.jsonl is a FIFO (named pipe), not a regular file"),
    ("experiment --out whose .experiment.lock is a FIFO",
     lambda t, v: (os.makedirs(os.path.join(t, "e")), _fifo_instead(os.path.join(t, "e", ".experiment.lock")),
                   ["experiment", "H1", "--budget", "smoke", "--out", os.path.join(t, "e")])[2],
     ".experiment.lock is a FIFO (named pipe), not a regular file"),
    # --- an experiment's --out (it used to fill `--out /` with grid folders)
    ("experiment --out the run directory of one train run", lambda t, v: _experiment_into(t, v, "run"),
     "is the run directory of one `siamdyn train` run"),
    ("experiment --out a file", lambda t, v: _experiment_into(t, v, "file"), "is a file; an experiment writes"),
    ("experiment --out a folder of other files (a source tree)", lambda t, v: _experiment_into(t, v, "folder"),
     "is a folder of other files (setup.py, siamdyn), not an experiment folder"),
    # --- the linear model's numbers are bounded as the config's are (lr=nan failed in the eigensolver)
    ("linear --set lr=nan", _linear("lr=nan"), "lr=nan must be a finite number in (0, 10]"),
    ("linear --set steps=1e300", _linear("steps=1e300"), "steps=1e+300 must be in [1, 1e7]"),
    ("linear --set seed=-1", _linear("seed=-1"), "seed=-1 must be in [0, 2^32)"),
    ("linear --set data_eig_min above data_eig_max", _linear("data_eig_min=5"), "exceeds data_eig_max=1.0; swap"),
    ("linear --set tau=1", _linear("tau=1"), "tau=1.0 must be in [0, 1)"),
    ("linear --set of an unknown key", _linear("dim=8"), "unknown linear-model key 'dim'"),
    ("linear --set predictor=mlp", _linear("predictor=mlp"), "predictor='mlp': choose linear or none"),
    ("held-out readings asked for with heldout_images=1",
     lambda t, v: _train(t, _fmnist(t), "--set", "heldout_every=1", "--set", "heldout_images=1"),
     "gives none (they need 2 images or more)"),
    ("plot of a run whose metrics.jsonl is empty",
     lambda t, v: ["plot", _emptied(t, v, "metrics.jsonl"), "--out", os.path.join(t, "plots")],
     "no metric lines in metrics.jsonl yet, so nothing to plot"),
    # --- the other commands' numbers and paths
    ("toy --sweep-phi0 that is not a number", lambda t, v: ["toy", "--sweep-phi0", "a,b", "--no-plots"],
     "--sweep-phi0 'a,b' is not a number; pass a number in [-100, 100]"),
    ("toy --out a file",
     lambda t, v: (open(os.path.join(t, "f"), "w").close(), ["toy", "--out", os.path.join(t, "f")])[1],
     "is a file, and this command writes a folder of files there"),
    ("baseline --limit -1", lambda t, v: ["baseline", "--limit", "-1"], "limit=-1 must be in [0, 1e9]"),
    ("probe --epochs 0", lambda t, v: ["probe", v, "--epochs", "0"], "--epochs 0 is out of range; pass an"),
    ("demo --steps 0", lambda t, v: ["demo", "--steps", "0"], "--steps 0 is out of range; pass an integer in [1, 1e6]"),
    ("export --out an existing folder", lambda t, v: ["export", v, "--out", t], "is a folder, not a file; name"),
]


# (what, build argv from (tmp, victim run dir), expected part of the message); a failed start must also
# leave the command's --out as it was (run_case checks it for every case)
RUN_DIR_AND_DATA_CASES = [
    # --- run directories that cannot be confused or overwritten
    ("train --out a folder of other files (a source tree)", lambda t, v: _into_folder(t, "pyproject.toml", "src/"),
     "is a folder of other files (pyproject.toml, src), not a run"),
    ("train --out a home folder (dotfiles only)", lambda t, v: _into_folder(t, ".bashrc", ".cache/"),
     "is a folder of other files (.bashrc, .cache), not a run"),
    ("--resume of a run whose config.yaml was edited by hand (lr)", lambda t, v: _edited_config(t, v, "lr", 0.0625),
     "no longer matches the config of its checkpoint (lr: "),
    ("--resume of a run that never reached its first checkpoint", lambda t, v: _never_checkpointed(t, v),
     "never reached its first checkpoint"),
    ("export into the run's own ckpt/last.pt", lambda t, v: ["export", v, "--out", os.path.join(v, "ckpt", "last.pt")],
     "would replace ckpt of run"),
    ("export over the run's config.yaml", lambda t, v: ["export", v, "--out", os.path.join(v, "config.yaml")],
     "would replace config.yaml of run"),
    ("probe of a run a trainer holds locked", lambda t, v: ["probe", _held_copy(t, v)], "is in use by process"),
    # --- data read as it is
    ("IDX test split of 0 images", lambda t, v: _empty_test_split(t), "the test split of fashion-mnist in"),
    ("gzip bomb (100 MB of zeros in 100 KB)", lambda t, v: _corrupt(t, "train-images-idx3-ubyte.gz", _bomb_gz(100)),
     "inflates past the 31,376 bytes its IDX header (40, 28, 28) declares"),
    (".gz with a second gzip member appended", lambda t, v: _second_member(t), "a second gzip member"),
    ("IDX header claiming more than its gzip can hold", lambda t, v: _corrupt(t, "train-images-idx3-ubyte.gz", _gz(
        b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)), "more than its"),
    ("image of 32-bit float pixels", lambda t, v: _imagefolder(t, {**_good_folder(), "b/0.tif": _float_tiff()}),
     "whose range cannot be known"),
]
