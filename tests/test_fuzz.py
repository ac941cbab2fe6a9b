"""Property-based tests (hypothesis): loaders given random or mutated bytes return valid
data or raise the clean DataError, never anything else; augmentations keep shape, dtype
and range, are deterministic under a seed and never produce NaN."""
import gzip
import os
import pickle
import struct
import tempfile

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siamdyn.data.augment import AugmentParams, BatchAugment
from siamdyn.data.datasets import ImageData, load_cifar10, load_idx_pair, parse_idx
from siamdyn.errors import DataError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_idx(n=3, side=4):
    return struct.pack(">HBBIII", 0, 8, 3, n, side, side) + bytes(range(n * side * side))


@FUZZ
@given(raw=st.binary(max_size=200), dims=st.integers(1, 3))
def test_parse_idx_on_random_bytes(raw, dims):
    try:
        arr = parse_idx(raw, "fuzz.idx", dims)
    except DataError:
        return
    assert arr.dtype == np.uint8 and arr.ndim == dims


@FUZZ
@given(pos=st.integers(0, 59), value=st.integers(0, 255), cut=st.integers(0, 60))
def test_parse_idx_on_a_mutated_valid_file(pos, value, cut):
    raw = bytearray(_valid_idx())
    raw[pos % len(raw)] = value
    try:
        arr = parse_idx(bytes(raw[: len(raw) - cut % len(raw)]), "fuzz.idx", 3)
    except DataError:
        return
    assert arr.ndim == 3 and arr.size == len(raw) - cut % len(raw) - 16


@FUZZ
@given(images=st.binary(max_size=120), labels=st.binary(max_size=40), gz=st.booleans())
def test_idx_pair_files_of_random_bytes(images, labels, gz):
    with tempfile.TemporaryDirectory() as d:
        paths = [os.path.join(d, "img.gz"), os.path.join(d, "lab.gz")]
        for path, raw in zip(paths, (images, labels)):
            with open(path, "wb") as f:
                f.write(gzip.compress(raw) if gz else raw)
        try:
            data = load_idx_pair(*paths)
        except DataError:
            return
        assert isinstance(data, ImageData) and data.images.dtype == torch.uint8


def _cifar_dir(d, batch: bytes):
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(os.path.join(d, name), "wb") as f:
            f.write(good)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        f.write(batch)


@FUZZ
@given(raw=st.binary(max_size=300), mutate=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))
def test_cifar_batch_of_random_or_mutated_bytes(raw, mutate):
    base = bytearray(pickle.dumps({b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 7,
                                   b"labels": [3, 4]}, protocol=2))
    for pos, value in mutate:
        base[pos % len(base)] = value
    for batch in (raw, bytes(base)):
        with tempfile.TemporaryDirectory() as d:
            _cifar_dir(d, batch)
            try:
                data = load_cifar10(d, "test")
            except DataError:
                continue
            assert data.images.shape[1:] == (3, 32, 32) and len(data.images) == len(data.labels)


@st.composite
def augment_cases(draw):
    n, c = draw(st.integers(1, 6)), draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(8, 40)), draw(st.integers(8, 40))
    lo = draw(st.floats(0.01, 1.0))
    r_lo = draw(st.floats(0.2, 2.0))
    params = AugmentParams(crop_scale_min=lo, crop_scale_max=draw(st.floats(lo, 1.0)),
                           crop_ratio_min=r_lo, crop_ratio_max=draw(st.floats(r_lo, 5.0)),
                           flip_p=draw(st.floats(0, 1)), jitter_p=draw(st.floats(0, 1)),
                           brightness=draw(st.floats(0, 0.99)), contrast=draw(st.floats(0, 0.99)),
                           saturation=draw(st.floats(0, 0.99)), grayscale_p=draw(st.floats(0, 1)),
                           blur_p=draw(st.floats(0, 1)))
    return n, c, h, w, params, draw(st.integers(0, 2**31))


@FUZZ
@given(case=augment_cases())
def test_augment_shape_dtype_range_determinism(case):
    n, c, h, w, params, seed = case
    images = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    mean, std = torch.full((c,), 0.3), torch.full((c,), 0.25)
    aug = BatchAugment(params, mean, std)
    a = aug(images, torch.Generator().manual_seed(seed))
    b = aug(images, torch.Generator().manual_seed(seed))
    assert a.shape == (n, c, h, w) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    pixels = a * 0.25 + 0.3  # undo the normalisation: every pixel stays in [0, 1]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
