"""Count the reads of tensor values that a piece of code makes.

On a GPU each read of a value (`.item()`, `.tolist()`, `float(t)`, `bool(t)`, `int(t)`) waits
for all queued work: a host sync. The instruments keep their numbers on the device and read
them in one batch (probes/deferred.py); this counter is how the tests hold them to that on a
machine without a GPU (on CUDA, `torch.cuda.set_sync_debug_mode` says the same).

    with count_host_reads() as reads:
        train_step(...)
    reads.count  # value reads made inside the block, less those of host copies
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator

import torch

READS = ("item", "tolist", "__float__", "__bool__", "__int__")


@dataclass
class HostReads:
    """How many value reads a `count_host_reads` block made."""
    count: int = 0


_local = threading.local()  # per thread: the depth of its `reading_host_copies` blocks, whose reads are not counted


def _depth() -> int:
    return getattr(_local, "depth", 0)


@contextlib.contextmanager
def reading_host_copies() -> Iterator[None]:
    """Reads of tensors already copied to host memory (probes/deferred.py) wait for nothing:
    the counter leaves them out."""
    _local.depth = _depth() + 1
    try:
        yield
    finally:
        _local.depth -= 1


@contextlib.contextmanager
def count_host_reads() -> Iterator[HostReads]:
    """Count the value reads of every tensor inside the block (not thread-safe: one block at a time)."""
    reads = HostReads()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(original):
        def read(self, *args, **kwargs):
            if not _depth():
                reads.count += 1
            return original(self, *args, **kwargs)
        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(original))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
