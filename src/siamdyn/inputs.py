"""One reader for every input file (data, configs, checkpoints, run records): `open_input`.

Opening a FIFO for reading blocks until a writer appears, and a device file can stream without
end, so a special file named like an image or a config would hang a run forever. `open_input`
opens without blocking, checks on the open descriptor (no race with a swap of the path) that
it is a regular file, and only then hands it to `open` as an ordinary file object. Files a run
appends to or locks (metrics.jsonl, .lock) are checked by `refuse_special` before they are
opened: an append to a FIFO blocks just the same. tests/test_inputs.py fails on a call of the
builtin `open` that reads.
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


def _not_regular(path: str, kind: str) -> NotRegularFile:
    err = NotRegularFile(f"{path} is {kind}, not a regular file; siamdyn reads files only — replace it with a "
                         "regular file or remove it")
    err.strerror = f"{kind}, not a regular file"  # for callers that print OSError.strerror
    return err


def _regular_only(path: str, flags: int) -> int:
    """`open`'s opener: the descriptor of `path` if it is a regular file (links followed)."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise _not_regular(path, kind)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_input(path: str | os.PathLike, mode: str = "r", **kwargs: Any) -> IO:
    """`open(path, mode)` for reading, refusing anything but a regular file with one line naming the
    path and what it is, before a single byte is read. `open` owns the descriptor from the start."""
    if any(c in mode for c in "wax+"):
        raise ValueError(f"open_input reads; mode {mode!r} writes (use outputs.py)")
    return open(os.fspath(path), mode, opener=_regular_only, **kwargs)


def refuse_special(path: str | os.PathLike) -> None:
    """Before appending to or locking `path`: refuse it if it exists and is not a regular file."""
    try:
        kind = special_kind(os.stat(path).st_mode)
    except OSError:  # missing (it will be created) or unreadable (the open says why)
        return
    if kind is not None:
        raise _not_regular(os.fspath(path), kind)


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in `path` (a run's summary.json, eval.json, an experiment.json); a truncated or
    foreign file is one SiamdynError naming it."""
    import json
    try:
        with open_input(path, encoding="utf-8") as f:
            value = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        why = f"{e.msg}, line {e.lineno}" if isinstance(e, json.JSONDecodeError) else "not UTF-8 text"
        raise SiamdynError(f"{os.fspath(path)} is not valid JSON ({why}; truncated?)") from None
    if not isinstance(value, dict):
        raise SiamdynError(f"{os.fspath(path)} holds a JSON {type(value).__name__}, not an object")
    return value
