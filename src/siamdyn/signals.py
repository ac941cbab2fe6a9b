"""Stopping a run at a step boundary: SIGINT (Ctrl-C) and SIGTERM set a flag that the loop
reads between steps, so every stop is an exact resume point and a checkpoint being
written is never cut short, however many signals arrive."""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class StopSignals:
    """While active, SIGINT and SIGTERM request a stop instead of interrupting; the previous
    handlers come back on exit. Outside the main thread (where Python cannot install
    handlers) it does nothing and `requested` stays False."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            print(f"\nsiamdyn: {signal.Signals(signum).name} received; stopping after this step with a checkpoint",
                  file=sys.stderr, flush=True)
        self.requested = True

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
