"""Loaders that turn files into one uint8 tensor (N, C, H, W) plus int64 labels.

Every dataset that fits in memory is held whole, so the training step slices a batch
and augments it on the device in one call (docs/design.md §2); there is no per-image Python.
Malformed files raise `DataError` with the file and the fix.
"""
from __future__ import annotations

import math
import os
import pickle
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from siamdyn.inputs import NotRegularFile, open_input
from siamdyn.errors import DataError, warn

if TYPE_CHECKING:  # PIL is imported where images are read: the other datasets do not need it
    from PIL import Image

# Where a dataset is read from when neither data_dir nor $SIAMDYN_DATA says: the Debian package's folder.
DEFAULT_DATA_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
FMNIST_FIX = ("reinstall it (`apt-get install --reinstall dataset-fashion-mnist`) or point --data-dir / SIAMDYN_DATA "
              "at a good copy")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class ImageData:
    """A whole split in memory: `images` uint8 (N, C, H, W), `labels` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"images must be a uint8 tensor (N, C, H, W), "
                            f"got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        # Wrong labels give a kNN accuracy that looks right and is not: refuse them here.
        if self.labels.dim() != 1 or self.labels.dtype != torch.int64:
            raise DataError(f"labels must be 1-D integers, got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(f"labels must lie in 0..{len(self.classes) - 1} (one per class), found "
                            f"{int(self.labels.min())}..{int(self.labels.max())}; fix the label file")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def balanced_subset(self, n: int) -> "ImageData":
        """The first ⌈n / classes⌉ images of each class, cut to n, in original order; when some
        classes have fewer images than that, the others' next images fill it up to n."""
        if n <= 0 or n >= len(self):
            return self
        per_class = -(-n // max(1, len(self.classes)))
        rank = torch.empty(len(self), dtype=torch.int64)  # position of each image within its class
        for c in self.labels.unique():
            members = torch.nonzero(self.labels == c).flatten()
            rank[members] = torch.arange(len(members))
        index = torch.nonzero(rank < per_class).flatten()[:n]
        if len(index) < n:  # short classes: take the next images of the others, round-robin
            rest = torch.nonzero(rank >= per_class).flatten()
            rest = rest[torch.argsort(rank[rest] * len(self) + rest)][:n - len(index)]
            index = torch.sort(torch.cat([index, rest])).values
        return ImageData(self.images[index], self.labels[index], self.classes)


# --------------------------------------------------------------------------- IDX (MNIST family)
# A file of this loader declares its size in its IDX header; more than this is not one of them (Fashion-MNIST's
# largest is 47 MB), so it is refused before anything is inflated.
IDX_MAX_BYTES = 2 ** 30
_DEFLATE_MAX_RATIO = 1100  # deflate expands at most ~1032x: a header claiming more than that is not this file's


def _read_gz(path: str, expect_dims: int) -> bytes:
    """The IDX bytes of gzip file `path`, inflated no further than its IDX header says they reach
    (+1 byte, to see a file that holds more): a gzip bomb is refused after as many bytes as the
    data it claims to be, not after all it would inflate to. One gzip member, whole, CRC checked."""
    if not os.path.exists(path):
        raise DataError(f"missing data file {path}; {FMNIST_FIX}")
    with open_input(path, "rb") as f:
        packed = f.read()
    z = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing; stops at the end of the first member
    try:
        raw = z.decompress(packed, 4 + 4 * expect_dims)  # the header alone
        dims = idx_header(raw, path, expect_dims)
        need = 4 + 4 * expect_dims + math.prod(dims)
        if need > min(IDX_MAX_BYTES, _DEFLATE_MAX_RATIO * len(packed) + 4096):
            raise DataError(f"{path}'s IDX header declares {dims} ({need:,} bytes), more than its {len(packed):,} "
                            f"gzip bytes can hold or than the {IDX_MAX_BYTES:,} this loader reads; {FMNIST_FIX}")
        while len(raw) <= need and not z.eof:
            chunk = z.decompress(z.unconsumed_tail, need + 1 - len(raw))
            if not chunk and not z.eof:
                break  # the input ran out first: truncated (said below)
            raw += chunk
    except zlib.error as e:
        raise DataError(f"corrupt or truncated gzip file {path} (zlib: {e}); {FMNIST_FIX}") from None
    if len(raw) > need:
        raise DataError(f"{path} inflates past the {need:,} bytes its IDX header {dims} declares (a file of another "
                        f"dataset, or a decompression bomb); {FMNIST_FIX}")
    if not z.eof:
        raise DataError(f"corrupt or truncated gzip file {path} (it ends before its gzip trailer); {FMNIST_FIX}")
    if z.unused_data:
        what = "a second gzip member" if z.unused_data[:2] == b"\x1f\x8b" else "bytes that are not gzip data"
        raise DataError(f"{path} holds its whole IDX data and then {len(z.unused_data):,} more bytes ({what}); the "
                        f"file was appended to — {FMNIST_FIX}")
    return raw


def idx_header(raw: bytes, path: str, expect_dims: int) -> tuple[int, ...]:
    """The dimensions in the header of IDX bytes `raw` (magic 0x0000_08_0D: uint8, D dims)."""
    if len(raw) < 4 + 4 * expect_dims:
        raise DataError(f"{path} is too short for an IDX header ({len(raw)} bytes); {FMNIST_FIX}")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or ndim != expect_dims:
        magic = raw[:4].hex()
        raise DataError(f"{path} has IDX magic 0x{magic}, expected 0x000008{expect_dims:02x} "
                        f"(uint8, {expect_dims}-d); {FMNIST_FIX}")
    return struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])


def parse_idx(raw: bytes, path: str, expect_dims: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 0x0000_08_0D, D = number of dims)."""
    dims = idx_header(raw, path, expect_dims)
    body = raw[4 + 4 * len(dims):]
    need = math.prod(dims)  # Python ints: no int64 overflow on a hostile header
    if len(body) != need:
        why = "truncated?" if len(body) < need else "more than it declares"
        raise DataError(f"{path} holds {len(body)} data bytes but its header {dims} needs {need} ({why}); "
                        f"{FMNIST_FIX}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_idx_pair(images_path: str, labels_path: str) -> ImageData:
    images = parse_idx(_read_gz(images_path, 3), images_path, 3)
    labels = parse_idx(_read_gz(labels_path, 1), labels_path, 1)
    if len(images) != len(labels):
        raise DataError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; "
                        f"{FMNIST_FIX}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path} has label {labels.max()} outside 0..9; {FMNIST_FIX}")
    return ImageData(torch.from_numpy(images.copy()).unsqueeze(1),
                     torch.from_numpy(labels.astype(np.int64)), FMNIST_CLASSES)


FMNIST_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def load_fashion_mnist(root: str, split: str) -> ImageData:
    if os.path.isfile(root):
        raise DataError(f"data directory {root} is a file, not a folder; pass --data-dir the folder that holds "
                        "the four .gz files")
    if not os.path.isdir(root):
        raise DataError(f"data directory {root} does not exist; install the Debian package "
                        "dataset-fashion-mnist (bash scripts/setup.sh does) or pass --data-dir")
    img, lab = FMNIST_FILES[split]
    return load_idx_pair(os.path.join(root, img), os.path.join(root, lab))


# --------------------------------------------------------------------------- CIFAR-10
CIFAR_FIX = "point --data-dir at the extracted `cifar-10-batches-py` folder"
# The only globals a CIFAR-10 python batch needs; anything else in a pickle is refused,
# so a hostile or damaged file cannot run code (pickle would call whatever it names).
_CIFAR_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def load_cifar10(root: str, split: str) -> ImageData:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = os.path.join(root, name)
        if not os.path.exists(path):
            raise DataError(f"missing CIFAR-10 batch {path}; {CIFAR_FIX}")
        try:
            with open_input(path, "rb") as f:
                batch = _CifarUnpickler(f, encoding="bytes").load()
        except NotRegularFile:
            raise
        except Exception as e:  # pickle raises many types on garbage input
            raise DataError(f"corrupt CIFAR-10 batch {path} ({type(e).__name__}); {CIFAR_FIX}") from None
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            keys = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
            raise DataError(f"CIFAR-10 batch {path} lacks keys b'data'/b'labels' (has {keys}); {CIFAR_FIX}")
        data = np.asarray(batch[b"data"])
        lab = np.asarray(batch[b"labels"])
        labels_ok = lab.ndim == 1 and np.issubdtype(lab.dtype, np.integer)
        if not labels_ok or (lab.size and not 0 <= lab.min() <= lab.max() <= 9):
            raise DataError(f"CIFAR-10 batch {path} has labels {lab.dtype} {lab.shape}, expected N integers in 0..9; "
                            f"{CIFAR_FIX}")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(f"CIFAR-10 batch {path} has data {data.dtype} {data.shape} and {len(lab)} labels, "
                            f"expected uint8 (N, 3072) and N labels; {CIFAR_FIX}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab.astype(np.int64))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return ImageData(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes)


# --------------------------------------------------------------------------- ImageFolder
def _split_folders(root: str) -> tuple[str, str | None]:
    """(folder of the train classes, folder of the test classes or None: hold out from train)."""
    train = os.path.join(root, "train")
    test = next((os.path.join(root, s) for s in ("test", "val") if os.path.isdir(os.path.join(root, s))), None)
    if os.path.isdir(train):
        return train, test
    if test is not None:
        raise DataError(f"image folder {root} has {os.path.basename(test)}/ but no train/; add ROOT/train/CLASS/*.png "
                        "or put the class folders in ROOT directly")
    return root, None


def _class_names(base: str) -> list[str]:
    return sorted(d for d in os.listdir(base)
                  if os.path.isdir(os.path.join(base, d)) and d not in ("train", "test", "val"))


def load_image_folder(root: str, split: str, image_size: int = 0) -> ImageData:
    """`root/CLASS/*.png`, or `root/train/CLASS` with `root/test/CLASS` (or `val`). Classes and
    their label numbers come from the train classes; test folders map to them by name. Without
    a test folder every 6th image of each class is held out as the test split."""
    if not os.path.isdir(root):
        raise DataError(f"image folder {root} does not exist; pass --data-dir ROOT with ROOT/CLASS/*.png")
    train_base, test_base = _split_folders(root)
    classes = _class_names(train_base)
    if not classes:
        raise DataError(f"image folder {train_base} has no class subfolders; lay it out as ROOT/CLASS/*.png")
    base, holdout = (train_base, split) if test_base is None else ((train_base, None) if split == "train"
                                                                    else (test_base, None))
    present = _class_names(base) if base != train_base else classes
    extra = sorted(set(present) - set(classes))
    if extra:
        raise DataError(f"{base} has classes that {train_base} lacks ({', '.join(extra)}); their labels would be "
                        "wrong — add them to train/ or remove them")
    missing = sorted(set(classes) - set(present))
    if missing:
        warn(f"{base} has no images of {', '.join(missing)}; kNN is measured on the other classes")
    images, labels = [], []
    for ci, c in enumerate(classes):
        if c not in present:
            continue
        files = sorted(f for f in os.listdir(os.path.join(base, c)) if not f.startswith("."))
        if holdout is not None:
            files = [f for i, f in enumerate(files) if (i % 6 == 5) == (holdout == "test")]
        for fname in files:
            arr = _read_image(os.path.join(base, c, fname), base, image_size)
            if images and arr.shape != images[0].shape:
                raise DataError(f"image {os.path.join(base, c, fname)} is {arr.shape[1]}x{arr.shape[0]} but earlier "
                                f"ones are {images[0].shape[1]}x{images[0].shape[0]}; pass --set image_size=N")
            images.append(arr)
            labels.append(ci)
    if not images:
        raise DataError(f"image folder {base} holds no images for the {split} split")
    tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ImageData(tensor, torch.tensor(labels, dtype=torch.int64), classes)


def _read_image(path: str, base: str, image_size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        raise DataError(f"non-image file {path} in the image folder; remove it or move it out of {base}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_input(path, "rb") as fh, Image.open(fh) as im:
                im = _rgb(im, path)
                if image_size:
                    im = im.resize((image_size, image_size), Image.BILINEAR)
                return np.asarray(im, dtype=np.uint8)
    except NotRegularFile:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"unreadable image {path} ({type(e).__name__}); delete or replace it") from None


_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


def _rgb(im: "Image.Image", path: str) -> "Image.Image":
    """`im` as 8-bit RGB by what its pixels are. PIL's `convert("RGB")` alone clips 16-bit grey
    at 255 (a 16-bit scan turns white) and drops alpha, showing whatever colour transparent
    pixels hide: so 16-bit grey is scaled by 255/65535, transparent pixels are composited onto
    black, and palette and CMYK go through their own colour tables. 32-bit integer and float
    pixels have no range siamdyn can know: refused."""
    from PIL import Image
    if im.mode in _SIXTEEN_BIT:
        wide = np.asarray(im).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F", "I;16S"):
        raise DataError(f"image {path} has 32-bit or signed pixels (mode {im.mode}), whose range cannot be known; "
                        "save it with 8 or 16 bits per channel")
    if im.mode in _ALPHA or "transparency" in im.info:
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, im.convert("RGBA")).convert("RGB")
    return im.convert("RGB")


# --------------------------------------------------------------------------- synthetic
def make_synthetic(n: int = 600, size: int = 28, channels: int = 1, classes: int = 10, seed: int = 0) -> ImageData:
    """Ten classes of oriented gratings at class-specific frequency, random phase and noise:
    learnable structure in a few hundred images, for fast tests of the real code paths."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    angle = labels.float() * (torch.pi / classes)
    freq = 0.25 + 0.1 * (labels % 3).float()
    phase = torch.rand(n, generator=g) * 2 * torch.pi
    wave = torch.sin(freq[:, None, None] * (xx * torch.cos(angle)[:, None, None] + yy * torch.sin(angle)[:, None, None])
                     + phase[:, None, None])
    img = 0.5 + 0.4 * wave + 0.1 * torch.randn(n, size, size, generator=g)
    img = img.clamp(0, 1).mul(255).round().to(torch.uint8).unsqueeze(1).repeat(1, channels, 1, 1)
    return ImageData(img, labels.long(), [f"class{i}" for i in range(classes)])


def load_split(dataset: str, root: str, split: str, image_size: int = 0, synthetic_n: int = 0) -> ImageData:
    """Load one split (`train` or `test`) of a named dataset. Synthetic train splits hold
    max(600, synthetic_n) images (CIFAR-sized ones for GPU benchmarks)."""
    if dataset == "fashion-mnist":
        return load_fashion_mnist(root, split)
    if dataset == "cifar10":
        if not root:
            raise DataError("cifar10 needs --data-dir pointing at the extracted cifar-10-batches-py folder")
        return load_cifar10(root, split)
    if dataset == "imagefolder":
        if not root:
            raise DataError("imagefolder needs --data-dir ROOT with ROOT/CLASS/*.png")
        return load_image_folder(root, split, image_size)
    if dataset in ("synthetic", "synthetic-rgb"):
        return make_synthetic(n=max(600, synthetic_n) if split == "train" else 200, size=image_size or 28,
                              channels=3 if dataset == "synthetic-rgb" else 1, seed=0 if split == "train" else 1)
    raise DataError(f"unknown dataset {dataset!r}")
