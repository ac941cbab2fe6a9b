"""What `siamdyn COMMAND` does when something other than a SiamdynError (one line, exit 2) ends it.

- Ctrl-C (KeyboardInterrupt) at any moment: while Python imports torch, while data loads,
  after the last step: one line, exit code 130 (128 + SIGINT, as shells report it). During
  the training steps signals.py turns Ctrl-C into a stop at a step boundary with a checkpoint
  instead (exit 2, `stopped at step N; checkpoint saved …`); that stays as it is.
- Any other exception is a bug: one line naming it and the file that holds its traceback
  (in the run directory when a run was under way, else a temp file), exit code 1.

Standard library only: cli.py imports this before torch, so it is in place while torch loads.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import traceback
from typing import Iterator

INTERRUPTED = 130
INTERNAL_ERROR = 1
TRACEBACK_FILE = "traceback.txt"
_RUN_DIR = "siamdyn_run_dir"  # the attribute mark_run_dir sets on an exception


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """A second Ctrl-C while the first one is being reported must not end in a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupted() -> int:
    """Say that Ctrl-C ended the command, on one line; the exit code to return."""
    with _sigint_ignored():
        # the terminal echoed ^C where the cursor stood: start a line of our own there
        lead = "\n" if sys.stderr.isatty() else ""
        print(f"{lead}siamdyn: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
    return INTERRUPTED


def mark_run_dir(exc: BaseException, run_dir: str) -> None:
    """Record that `exc` broke the run in `run_dir`, so its traceback is saved there."""
    with contextlib.suppress(AttributeError):  # exceptions with __slots__ cannot carry it
        setattr(exc, _RUN_DIR, run_dir)


def internal_error(exc: BaseException) -> int:
    """Report a bug on one line and save its traceback; the exit code to return."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    kind = type(exc).__qualname__
    if type(exc).__module__ not in ("builtins", "__main__"):
        kind = f"{type(exc).__module__}.{kind}"
    what = " ".join(str(exc).split())  # one line, whatever the exception's message holds
    if len(what) > 300:
        what = what[:300] + "…"
    head = f"siamdyn: internal error: {kind}" + (f": {what}" if what else "")
    path = _save_traceback(text, getattr(exc, _RUN_DIR, None))
    with _sigint_ignored():
        if path:
            print(f"{head}; traceback saved to {path}", file=sys.stderr, flush=True)
        else:  # nowhere to write it: the traceback must not be lost, so it goes to stderr
            print(f"{head}; the traceback could not be saved to a file:\n{text}", file=sys.stderr, flush=True)
    return INTERNAL_ERROR


def _save_traceback(text: str, run_dir: str | None) -> str | None:
    """Write `text` into `run_dir` (one file per torchrun rank) or a temp file; its path, or None."""
    rank = os.environ.get("RANK", "0")
    if run_dir and os.path.isdir(run_dir):
        path = os.path.join(run_dir, TRACEBACK_FILE if rank == "0" else f"traceback-rank{rank}.txt")
        try:
            with open(path, "w") as f:
                f.write(text)
            return path
        except OSError:
            pass  # a full or read-only run directory: try the temp folder
    try:
        tag = f"rank{rank}-" if "RANK" in os.environ else ""
        fd, path = tempfile.mkstemp(prefix=f"siamdyn-traceback-{tag}", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    except OSError:
        return None
