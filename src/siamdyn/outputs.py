"""One writer for every file siamdyn writes: run files, plots, exports, reports.

- Atomic: the bytes go to a temp file in the target's own folder (a rename across filesystems
  is a copy), are fsynced, then `os.replace`d over the target and the folder is fsynced; a kill
  or a full disk leaves the previous file, or none, never half of one.
- No silent overwrite: `refuse_existing` names the files in the way and `--overwrite` before
  anything is written. Run directories have their own rule (runs.check_run_dir), and
  `siamdyn report` owns its findings.md and figures (experiments/report.py).
- Any OSError — a folder that cannot be made or written, a file where a folder should be, a full
  disk — becomes one SiamdynError naming the path, the cause and what fixes it.

Standard library only: torch and matplotlib stay the callers' business.
"""
from __future__ import annotations

import errno
import os
import tempfile
from typing import IO, Callable, Iterable

from siamdyn.errors import SiamdynError

_NO_ACCESS = "fix its permissions or write somewhere else (--out)"
_FIXES = {
    errno.ENOSPC: "free disk space and run the command again",
    errno.EDQUOT: "free space in your disk quota and run the command again",
    errno.EACCES: _NO_ACCESS,
    errno.EPERM: _NO_ACCESS,
    errno.EROFS: "the filesystem is read-only: write somewhere else (--out)",
    errno.EISDIR: "that is a folder: name a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a file stands where a folder should be: choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def os_error_line(path: str, e: OSError, kept: bool = False) -> str:
    """One line for an OSError while writing `path`: the path, the cause, the fix."""
    cause = e.strerror or type(e).__name__
    line = f"cannot write {path} ({cause}); {_FIXES.get(e.errno, 'write somewhere else')}"
    return line + ("; the previous version is kept" if kept else "")


def _fsync_dir(path: str) -> None:
    """Make the rename itself durable (the folder's entry), where the OS lets us open a folder."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[IO], object], mode: str = "wb") -> None:
    """Call `write(file)` on a temp file beside `path`, fsync, then rename over `path`.
    A crash or a full disk leaves the previous file intact; any OSError is one SiamdynError."""
    folder = os.path.dirname(os.path.abspath(path))
    kept = os.path.isfile(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; written files get the user's usual mode
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise SiamdynError(os_error_line(path, e, kept)) from None
        raise
    _fsync_dir(folder)


def atomic_write_text(path: str, text: str) -> None:
    """`text` into `path`, atomically (UTF-8)."""
    atomic_write(path, lambda f: f.write(text), mode="w")


def refuse_existing(paths: Iterable[str], overwrite: bool, example: str = "out") -> None:
    """Refuse, before anything is written, when a file to write already exists (unless
    `overwrite`) or when a folder stands where a file should go (always; `example` names a
    file the user could mean inside it)."""
    paths = list(paths)
    for path in paths:
        if os.path.isdir(path):
            raise SiamdynError(f"{path} is a folder, not a file; name the file to write "
                               f"(e.g. {os.path.join(path, example)})")
    existing = [p for p in paths if os.path.lexists(p)]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise SiamdynError(f"{existing[0]}{more} already exists; pass --overwrite to replace it, "
                           "or choose another --out")


def output_dir(path: str, overwrite: bool | None) -> str:
    """The folder `path`, made if missing, for a command that writes several files into it. A file
    standing there is refused, or replaced when `overwrite` (None: the command has no --overwrite,
    the file is always refused); an OSError is one line."""
    if os.path.lexists(path) and not os.path.isdir(path):
        if not overwrite:
            hint = "" if overwrite is None else ", or pass --overwrite to replace the file with the folder"
            raise SiamdynError(f"--out {path} is a file, and this command writes a folder of files there; "
                               f"choose another --out{hint}")
        try:
            os.unlink(path)
        except OSError as e:
            raise SiamdynError(os_error_line(path, e)) from None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise SiamdynError(os_error_line(path, e)) from None
    return path
