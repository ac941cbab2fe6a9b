"""One reader for every input file (data, configs, checkpoints, run records): `open_input`.

Opening a FIFO for reading blocks until a writer appears, and a device file can stream without
end, so a special file named like an image or a config would hang a run forever. `open_input`
opens without blocking, checks on the open descriptor (no race with a swap of the path) that
it is a regular file, and only then hands it back as an ordinary file object. Everything that
reads a user's file goes through it (tests/test_inputs.py greps the sources for other opens).
"""
from __future__ import annotations

import fcntl
import os
import stat
from typing import IO, Any

from siamdyn.errors import SiamdynError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


class NotRegularFile(SiamdynError, OSError):
    """A path that is a FIFO, device, socket or folder where a file is read (an OSError too, so
    callers that already turn a failed open into their own one-line message keep doing so)."""


def special_kind(mode: int) -> str | None:
    """What a non-regular file is ("a FIFO (named pipe)", …), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_input(path: str | os.PathLike, mode: str = "r", **kwargs: Any) -> IO:
    """`open(path, mode)` for reading, refusing anything but a regular file (links are followed)
    with one line naming the path and what it is, before a single byte is read."""
    if any(c in mode for c in "wax+"):
        raise ValueError(f"open_input reads; mode {mode!r} writes (use outputs.py)")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            err = NotRegularFile(f"{os.fspath(path)} is {kind}, not a regular file; siamdyn reads files only — "
                                 "replace it with a regular file or remove it")
            err.strerror = f"{kind}, not a regular file"  # for callers that print OSError.strerror
            raise err
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise
