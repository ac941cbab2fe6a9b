"""Numbers made on the device, read on the host when they are ready, without stalling it.

A GPU runs behind the Python loop that feeds it. Reading one value (`.item()`, `float(t)`)
makes the host wait until every queued kernel has run: the GPU then idles while the host
prepares the next step. So the training loop reads nothing per step. Each step's numbers
(loss, finite flag, collapse metrics, probe results) stay tensors; `DeferredReads.push`
starts their copy to host memory without blocking and marks the stream with an event;
`ready()` hands back a record once it is `max_pending` steps old (a step that old has
finished on the GPU, or nearly), so a number, a NaN or a collapse is seen a fixed two
steps late, the same on every rank and every rerun. On a CPU every record is read at once,
so the loop behaves exactly as a synchronous one.

`Stopwatch` times sections of work the same way: CUDA events on a GPU (the device time of
the section's kernels, read when they are done), wall time on a CPU.
"""
from __future__ import annotations

import collections
import contextlib
import time
from typing import Any, Iterator

import torch


class DeferredReads:
    """A queue of (meta, tensors) records whose tensors travel to the host asynchronously."""

    def __init__(self, device: torch.device, max_pending: int = 2, lockstep: bool | None = None):
        self.cuda = torch.device(device).type == "cuda"
        self.max_pending = max_pending
        # Lockstep (the default on a GPU): a record is read exactly when it is `max_pending` steps
        # old, never earlier, whatever the timing, so every rank of a DDP run (and every rerun)
        # acts on the same step. Off on a CPU: there every record is read at once.
        self.lockstep = self.cuda if lockstep is None else lockstep
        self.queue: collections.deque[tuple[int, Any, dict[str, torch.Tensor], Any]] = collections.deque()
        self.newest = 0  # the latest step pushed

    def push(self, step: int, meta: Any, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
        """Start the copy of step `step`'s `tensors` to the host; `meta` (plain values) travels
        beside them.
        Returns the host tensors and the CUDA event after which they hold their values (None on
        a CPU), for work that may start on them before the record is due."""
        event = None
        if self.cuda:
            # non_blocking device→host copies land in pinned memory, ordered on the stream
            tensors = {k: t.detach().to("cpu", non_blocking=True) for k, t in tensors.items()}
            event = torch.cuda.Event()
            event.record()
        else:
            tensors = {k: t.detach() for k, t in tensors.items()}
        self.queue.append((step, meta, tensors, event))
        self.newest = max(self.newest, step)
        return tensors, event

    def ready(self, block: bool = False) -> list[tuple[Any, dict[str, torch.Tensor]]]:
        """The records due, oldest first (waiting for their copies to land): every record with
        `block` or off lockstep, else those of steps at least `max_pending` behind the latest
        (counted in steps, not records: rank 0's probe records must not shift its lag)."""
        out = []
        while self.queue and (block or not self.lockstep or self.queue[0][0] <= self.newest - self.max_pending):
            _, meta, tensors, event = self.queue.popleft()
            if event is not None:
                event.synchronize()  # a record that old has (nearly always) landed already
            out.append((meta, tensors))
        return out

    def __len__(self) -> int:
        return len(self.queue)


class Stopwatch:
    """Total seconds spent in `with watch.section():` blocks: device time of their kernels on
    CUDA (events, resolved by `seconds` once they have run), wall time on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._done = 0.0
        self._open: list[tuple[Any, Any]] = []

    @contextlib.contextmanager
    def section(self) -> Iterator[None]:
        """Time the work launched inside the block."""
        if not self.cuda:
            t = time.perf_counter()
            yield
            self._done += time.perf_counter() - t
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._open.append((start, end))

    def seconds(self, block: bool = False) -> float:
        """Seconds of the finished sections (all of them, waiting if need be, with `block`)."""
        still = []
        for start, end in self._open:
            if block or end.query():
                end.synchronize()
                self._done += start.elapsed_time(end) / 1000
            else:
                still.append((start, end))
        self._open = still
        return self._done
