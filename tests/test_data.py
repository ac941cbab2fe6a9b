"""Loaders: real files parse, malformed files give a one-line DataError naming the file."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from siamdyn.data.datasets import ImageData, load_cifar10, load_fashion_mnist, load_image_folder, make_synthetic
from siamdyn.errors import DataError
from tests.conftest import needs_fmnist


def write_idx(path, array, magic=None):
    array = np.asarray(array, dtype=np.uint8)
    magic = magic if magic is not None else (0x0800 | array.ndim)
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def fake_fmnist(folder, n_img=6, n_lab=6, split="t10k"):
    os.makedirs(folder, exist_ok=True)
    write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"),
              np.arange(n_img * 28 * 28).reshape(n_img, 28, 28) % 256)
    write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), np.arange(n_lab) % 10)


def test_fake_idx_roundtrip(tmp_path):
    fake_fmnist(tmp_path)
    data = load_fashion_mnist(str(tmp_path), "test")
    assert data.images.shape == (6, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_count_mismatch(tmp_path):
    fake_fmnist(tmp_path, n_img=6, n_lab=5)
    with pytest.raises(DataError, match="6 images but .* 5 labels"):
        load_fashion_mnist(str(tmp_path), "test")


def test_bad_magic(tmp_path):
    fake_fmnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((6, 28, 28)), magic=0x0000_0901)
    with pytest.raises(DataError, match="IDX magic 0x00000901.*t10k-images|t10k-images.*IDX magic"):
        load_fashion_mnist(str(tmp_path), "test")


def test_truncated_gzip(tmp_path):
    fake_fmnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip.*t10k-images"):
        load_fashion_mnist(str(tmp_path), "test")


def test_truncated_body(tmp_path):
    fake_fmnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_fashion_mnist(str(tmp_path), "test")


def test_missing_dir_and_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_fashion_mnist(str(tmp_path / "nope"), "test")
    with pytest.raises(DataError, match="missing data file"):
        load_fashion_mnist(str(tmp_path), "test")


def test_cifar_batches(tmp_path):
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": np.full((4, 3072), 7, np.uint8), b"labels": [0, 1, 2, 3]}, f)
    data = load_cifar10(str(tmp_path), "train")
    assert data.images.shape == (20, 3, 32, 32) and int(data.images[0, 0, 0, 0]) == 7
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"pixels": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(DataError, match="lacks keys"):
        load_cifar10(str(tmp_path), "test")
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="corrupt CIFAR-10 batch"):
        load_cifar10(str(tmp_path), "test")


def test_image_folder(tmp_path):
    from PIL import Image
    for c in ("cat", "dog"):
        os.makedirs(tmp_path / c)
        for i in range(6):
            Image.new("RGB", (10, 10), (i * 10, 0, 0)).save(tmp_path / c / f"{i}.png")
    train = load_image_folder(str(tmp_path), "train")
    test = load_image_folder(str(tmp_path), "test")
    assert train.images.shape == (10, 3, 10, 10) and test.images.shape == (2, 3, 10, 10)
    assert train.classes == ["cat", "dog"]
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="non-image file .*notes.txt"):
        load_image_folder(str(tmp_path), "train")


def test_balanced_subset_and_synthetic():
    data = make_synthetic(n=100)
    sub = data.balanced_subset(30)
    assert len(sub) == 30 and torch.bincount(sub.labels).tolist() == [3] * 10
    with pytest.raises(DataError):
        ImageData(torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), [])  # float images


@needs_fmnist
def test_real_fashion_mnist_test_split():
    data = load_fashion_mnist("/usr/share/datasets/fashion-mnist", "test")
    assert data.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.labels).tolist() == [1000] * 10


def test_image_folder_labels_follow_the_train_classes_by_name(tmp_path, capsys):
    """test/ missing a class must not shift the others' labels (it used to: kNN against wrong labels)."""
    from PIL import Image
    for split, classes in (("train", ("ant", "bee", "cat")), ("test", ("ant", "cat"))):
        for ci, c in enumerate(classes):
            os.makedirs(tmp_path / split / c)
            for i in range(3):
                Image.new("RGB", (10, 10), (ci * 80, i, 0)).save(tmp_path / split / c / f"{i}.png")
    train = load_image_folder(str(tmp_path), "train")
    test = load_image_folder(str(tmp_path), "test")
    assert train.classes == test.classes == ["ant", "bee", "cat"]
    assert test.labels.tolist() == [0, 0, 0, 2, 2, 2]  # cat keeps label 2
    assert "has no images of bee" in capsys.readouterr().err
    only_train = tmp_path / "only" / "train"  # ROOT/train alone: every 6th image of a class is held out
    for c in ("x", "y"):
        os.makedirs(only_train / c)
        for i in range(6):
            Image.new("RGB", (10, 10), (i, 0, 0)).save(only_train / c / f"{i}.png")
    held_train, held_test = (load_image_folder(str(tmp_path / "only"), s) for s in ("train", "test"))
    assert (len(held_train), len(held_test)) == (10, 2) and held_test.labels.tolist() == [0, 1]


def test_labels_out_of_range_or_not_integers_are_refused():
    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    for labels, match in ((torch.tensor([0, 1, 2]), "0..1"), (torch.tensor([0.0, 1.0, 1.0]), "1-D integers"),
                          (torch.tensor([[0], [1], [1]]), "1-D integers"), (torch.tensor([0, -1, 1]), "0..1")):
        with pytest.raises(DataError, match=match):
            ImageData(images, labels, ["a", "b"])


def test_balanced_subset_fills_up_when_classes_are_short():
    labels = torch.tensor([0] * 100 + [1] * 3)  # one big class, one with 3 images
    data = ImageData(torch.zeros(103, 1, 8, 8, dtype=torch.uint8), labels, ["a", "b"])
    sub = data.balanced_subset(60)
    assert len(sub) == 60 and int((sub.labels == 1).sum()) == 3  # was 33: ⌈60/2⌉ of a, all 3 of b
    even = ImageData(torch.zeros(40, 1, 8, 8, dtype=torch.uint8), torch.arange(40) % 4, list("abcd"))
    assert even.balanced_subset(20).labels.bincount().tolist() == [5, 5, 5, 5]


@needs_fmnist
def test_images_are_read_by_their_real_mode_and_bit_depth(tmp_path):
    """Real Fashion-MNIST images saved as 16-bit grey, palette, CMYK, RGBA and LA decode to their
    8-bit pixels. PIL's convert("RGB") alone turned 16-bit grey white (clipped at 255) and showed
    the colour hidden under transparent pixels; those are composited onto black."""
    from PIL import Image

    from siamdyn.data.datasets import _read_image
    v = load_fashion_mnist("/usr/share/datasets/fashion-mnist", "test").images[:4, 0].numpy()  # (4, 28, 28)
    grey = np.arange(256, dtype=np.uint8)
    opaque = np.where(v > 0, 255, 0).astype(np.uint8)  # the background (0) is transparent, its hidden colour white
    hidden = np.where(v > 0, v, 255).astype(np.uint8)
    for i, x in enumerate(v):
        palette = Image.fromarray(x, "P")
        palette.putpalette(np.repeat(grey, 3).tobytes())
        saved = {"16bit.png": Image.fromarray(x.astype(np.uint16) * 257),
                 "palette.png": palette,
                 "cmyk.tif": Image.fromarray(np.stack([0 * x, 0 * x, 0 * x, 255 - x], -1), "CMYK"),
                 "rgba.png": Image.fromarray(np.stack([hidden[i]] * 3 + [opaque[i]], -1), "RGBA"),
                 "la.png": Image.fromarray(np.stack([hidden[i], opaque[i]], -1), "LA")}
        for name, im in saved.items():
            path = str(tmp_path / f"{i}-{name}")
            im.save(path)
            got = _read_image(path, str(tmp_path), 0)
            assert got.shape == (28, 28, 3) and got.dtype == np.uint8, name
            assert np.array_equal(got, np.stack([x] * 3, -1)), (name, int(np.abs(got[..., 0] - x).max()))


def test_a_gzip_bomb_is_refused_before_it_inflates(tmp_path):
    """A 200 KB .gz whose IDX header declares 40 images and which inflates to 200 MB: refused after
    the 31 KB its header declares (the gzip module read all 200 MB, 400 MB at its peak)."""
    import time
    import tracemalloc

    from tests.hostile_cases import _bomb_gz
    fake_fmnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(_bomb_gz(200))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DataError, match="inflates past the 31,376 bytes its IDX header"):
            load_fashion_mnist(str(tmp_path), "test")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB"
    assert time.perf_counter() - t0 < 5
