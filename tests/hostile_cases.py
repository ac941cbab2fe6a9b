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
