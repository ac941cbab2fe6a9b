"""The start of a run as one transaction (docs/reliability.md): a start that fails leaves no run
directory, or the run that was there byte-identical.

train.py checks everything that can fail before the first step (config, data, device, precision,
schedules, the checkpoint to resume) before `out` is touched. What must touch it — the folder,
the lock, config.yaml, the logs — happens inside `RunStart`, which puts `out` back as it was when
anything (a full disk, an unwritable folder, a bug, Ctrl-C) ends the start before it commits: a
folder it made is removed, files it added are deleted, and the run an `--overwrite` replaces is
set aside rather than deleted until the new one has started.
"""
from __future__ import annotations

import os
import shutil
import sys
from types import TracebackType

from siamdyn.errors import SiamdynError, warn
from siamdyn.runs import RUN_DERIVED, RUN_ENTRIES

ASIDE = ".replaced-run"  # where the run that --overwrite replaces waits until the new one has started


def _first_missing(path: str) -> str | None:
    """The topmost folder of `path` that does not exist yet (all of them are made for the run)."""
    missing = None
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


class RunStart:
    """`with RunStart(out, replace):` makes `out` ready for a run's first files; leaving the block
    normally commits the start, leaving it by an exception undoes it. Construct it before anything
    (the lock included) creates `out`: it remembers what `out` held then. `replace`: --overwrite of
    an existing run. `enabled=False` (DDP ranks other than 0): does nothing."""

    def __init__(self, out: str, replace: bool, enabled: bool = True):
        self.out, self.replace, self.enabled = out, replace, enabled
        self.missing = _first_missing(out)
        try:
            self.before: set[str] | None = set() if self.missing else set(os.listdir(out))
        except OSError:  # unreadable: the lock refuses it next, in one line; nothing is undone in it
            self.before = None
        self.aside: list[str] = []

    def __enter__(self) -> "RunStart":
        if not self.enabled:
            return self
        try:
            if self.replace and os.path.lexists(os.path.join(self.out, ASIDE)):  # a start killed mid-replace
                raise SiamdynError(f"{os.path.join(self.out, ASIDE)} holds the run a killed --overwrite was replacing; "
                                   "move back what you want to keep from it, delete it, then start again")
            if self.replace:  # the old run's files wait in ASIDE; the lock stays where it is
                self.aside = sorted(n for n in self.before or () if n in RUN_ENTRIES and n != ".lock")
                os.makedirs(os.path.join(self.out, ASIDE), exist_ok=True)
                for name in self.aside:
                    os.replace(os.path.join(self.out, name), os.path.join(self.out, ASIDE, name))
            os.makedirs(os.path.join(self.out, "ckpt"), exist_ok=True)
        except OSError as e:
            self._undo_or_warn()
            raise SiamdynError(f"cannot create run directory {self.out} ({e.strerror}); choose another --out") \
                from None
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if not self.enabled:
            return False
        if kind is None:  # committed: the replaced run goes for good
            shutil.rmtree(os.path.join(self.out, ASIDE), ignore_errors=True)
            derived = [n for n in self.aside if n in RUN_DERIVED]
            if derived:  # they described the old run; kept beside the new one they would look like its own
                print(f"siamdyn: --overwrite replaced the run in {self.out}, with what was made from it "
                      f"({', '.join(derived)})", file=sys.stderr)
            return False
        self._undo_or_warn()
        return False  # the exception goes on to the caller (one line, exit 2, or the internal-error report)

    def _undo_or_warn(self) -> None:
        try:
            self._undo()
        except OSError as e:  # the error that ended the start is the one to report; this one is said beside it
            warn(f"could not undo the failed start in {self.out} ({e.strerror}); remove what it left by hand")

    def _undo(self) -> None:
        """Remove what the start added, put the replaced run back, remove the folders it made."""
        if self.before is None or not os.path.isdir(self.out):
            return
        for name in set(os.listdir(self.out)) - (self.before - set(self.aside)) - {ASIDE}:
            path = os.path.join(self.out, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        for name in self.aside:
            os.replace(os.path.join(self.out, ASIDE, name), os.path.join(self.out, name))
        if os.path.isdir(os.path.join(self.out, ASIDE)):
            os.rmdir(os.path.join(self.out, ASIDE))
        if self.missing:  # the folders made for the run, from `out` up, as long as they are empty
            path = os.path.abspath(self.out)
            while os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)
                if path == self.missing:
                    break
                path = os.path.dirname(path)
