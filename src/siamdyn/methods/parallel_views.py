"""Both views of a step at once on a multi-core CPU: one thread per view, each with its share of the cores.

At width 16 on 28×28 images one convolution or BatchNorm is too small to keep two cores busy: two
threads made the step 1.75–1.80× faster than one, not 2× (docs/design.md §7, "Parallel views"). With
the stop-gradient (term 2 off, docs/seed.md §3) the two online branches never meet in the backward
pass: D(p_i, sg(t_j)) sends gradient into view i's branch only. So view i's forward, and the
backward of its loss terms, run on thread i with a single-view share of the cores; the target is
made between the two phases, on the caller's thread, as in the sequential step.

What stays as in the sequential step:
- BatchNorm running statistics are updated in view order: a view's call of a BatchNorm layer waits
  until the previous view's call of that layer is done (`BatchNormOrder`).
- Each parameter receives one gradient per view; a + b == b + a in IEEE arithmetic, so the order in
  which the threads add them does not matter and the step is deterministic (heads that draw random
  numbers, dropout, would draw them in an order that changes between runs: set parallel_views=off).
  An fp32 step equals the sequential step run with the same threads per view bit for bit
  (tests/test_parallel_views.py).
- Under bf16 autocast the two views may share one cached bf16 cast of a weight, but each thread's
  backward passes its own gradient through that cast, so a layer's two gradients are summed in fp32
  when they reach the parameter, not in bf16 before the cast as in one backward pass: the same
  gradient up to bf16 rounding, never a bias.
A layer that runs twice in one view's forward (a shared BatchNorm, say) is refused: its running
statistics could not follow the sequential order.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import queue
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from siamdyn.methods.siamese import SiameseMethod, StepOutput

T = TypeVar("T")


class _Worker(threading.Thread):
    """A thread that runs the jobs put on its queue with `threads` intra-op threads of its own."""

    def __init__(self, threads: int, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.threads, self.jobs, self.ready = threads, queue.SimpleQueue(), threading.Event()
        self.failed: BaseException | None = None

    def run(self) -> None:
        # A thread's first ATen call copies the process-wide thread count into it; make that call
        # now, then set this thread's own (which also sets the process-wide one: the caller restores it).
        try:
            torch.get_num_threads()
            torch.set_num_threads(self.threads)
        except BaseException as e:  # the caller, waiting on `ready`, raises it
            self.failed = e
            return
        finally:
            self.ready.set()
        while (job := self.jobs.get()) is not None:
            fn, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as e:  # handed to the caller, who re-raises it
                    future.set_exception(e)


class ViewThreads:
    """`n` worker threads with `threads` intra-op threads each; `run` gives job i to worker i."""

    def __init__(self, n: int, threads: int) -> None:
        if n < 1 or threads < 1:
            raise ValueError(f"ViewThreads needs at least one worker and one thread each; got {n} and {threads}")
        caller_threads = torch.get_num_threads()
        self.threads = threads
        self.workers = [_Worker(threads, f"siamdyn-view{i}") for i in range(n)]
        for w in self.workers:
            w.start()
            w.ready.wait()
        torch.set_num_threads(caller_threads)  # each worker set the process-wide count to its own
        failed = [w.failed for w in self.workers if w.failed is not None]
        if failed:
            self.close()
            raise failed[0]

    def run(self, jobs: list[Callable[[], T]]) -> list[T]:
        """jobs[i]() on worker i, all at once; their results, or the first job's error once all have ended."""
        if len(jobs) != len(self.workers):  # before any job starts: none may run on alone
            raise ValueError(f"{len(jobs)} jobs for {len(self.workers)} view threads")
        futures: list[cf.Future] = []
        for worker, job in zip(self.workers, jobs):
            futures.append(cf.Future())
            worker.jobs.put((job, futures[-1]))
        cf.wait(futures)
        return [f.result() for f in futures]

    def close(self) -> None:
        for w in self.workers:
            w.jobs.put(None)
        for w in self.workers:
            if w.is_alive():
                w.join()


_POOLS: dict[tuple[int, int], ViewThreads] = {}  # (views, threads each) → the process's pool, shared by its runs
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: it makes its own
    os.register_at_fork(after_in_child=_POOLS.clear)


def view_threads(n: int, threads: int) -> ViewThreads:
    """The process-wide pool of `n` view threads with `threads` intra-op threads each (made on first use)."""
    if (n, threads) not in _POOLS:
        _POOLS[(n, threads)] = ViewThreads(n, threads)
    return _POOLS[(n, threads)]


class BatchNormOrder:
    """Inside `with order:`, a view's call of a BatchNorm layer of `model` waits until the previous view
    has made its call of that layer or has ended its part, so the running statistics are updated view
    after view, as in the sequential step (two views; a layer runs once per view, or the second call
    raises). Threads say their view with `view(i)`."""

    def __init__(self, model: nn.Module) -> None:
        named = batchnorm_layers(model)
        self.names, self.layers = {id(m): name for name, m in named}, [m for _, m in named]
        self.cond = threading.Condition()
        self.calls: dict[tuple[int, int], int] = defaultdict(int)  # (view, layer id) → calls done
        self.ended: set[int] = set()
        self.local = threading.local()
        self.handles: list = []

    def __enter__(self) -> "BatchNormOrder":
        for m in self.layers:
            self.handles += [m.register_forward_pre_hook(self._before), m.register_forward_hook(self._after)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    @contextlib.contextmanager
    def view(self, i: int) -> Iterator[None]:
        """This thread computes view `i` (0 = first) until the block ends, however it ends."""
        self.local.view = i
        try:
            yield
        finally:
            self.local.view = None
            with self.cond:
                self.ended.add(i)
                self.cond.notify_all()

    def _before(self, layer: nn.Module, args: object) -> None:
        v = getattr(self.local, "view", None)
        if v is None:  # a call outside a view (the target, made on the caller's thread)
            return
        key = id(layer)
        with self.cond:
            if self.calls[(v, key)]:  # the next view's first call could come between this view's two
                raise RuntimeError(f"parallel views: BatchNorm layer {self.names[key]!r} runs twice in one view's "
                                   "forward, so its running statistics cannot follow the sequential order; "
                                   "set parallel_views=off")
            if v:
                self.cond.wait_for(lambda: self.calls[(v - 1, key)] > 0 or v - 1 in self.ended)

    def _after(self, layer: nn.Module, args: object, out: object) -> None:
        v = getattr(self.local, "view", None)
        if v is None:
            return
        with self.cond:
            self.calls[(v, id(layer))] += 1
            self.cond.notify_all()


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every BatchNorm of `model`: the only state parallel views keep in order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def forward_backward(model: "SiameseMethod", views: list[torch.Tensor], xbar: torch.Tensor | None,
                     pool: ViewThreads) -> "StepOutput":
    """`model(views, xbar)` and the backward of its loss, view i's branch on `pool`'s thread i. The
    caller's autocast carries over to the threads. Needs term 2 off (`grad_terms=predictor_branch`)."""
    from siamdyn.methods.siamese import StepOutput, check_views
    check_views(views)
    if len(views) != len(pool.workers):
        raise ValueError(f"{len(views)} views for {len(pool.workers)} view threads")
    if model.cfg.grad_terms != "predictor_branch":
        raise ValueError("parallel views need grad_terms=predictor_branch: with term 2 on, the views' "
                         "backward passes meet in the target branch")
    feats, zs, ps = online_pass(model, views, pool)
    targets = model.target.make(model, views, zs, xbar, False)  # behind the stop-gradient: no graph back
    pairs = model.target.pairs
    weight = term_weight(model, pairs)

    def backward(i: int) -> Callable[[], list]:
        def job() -> list:
            mine = [model.wide_pair_loss(ps[a], targets[b]) for a, b in pairs if a == i]
            if mine:
                torch.autograd.backward(mine, weighted(mine, weight))
            return [t.detach() for t in mine]
        return job

    by_view = pool.run([backward(i) for i in range(len(views))])
    mine = [iter(terms) for terms in by_view]
    loss = model.combine_losses([next(mine[a]) for a, _ in pairs])
    return StepOutput(loss, zs, ps, targets, feats)


def online_pass(model: "SiameseMethod", views: list[torch.Tensor], pool: ViewThreads) -> tuple[list, list, list]:
    """(features, projections z, predictions p) per view, view i's forward on `pool`'s thread i under the
    caller's autocast, BatchNorm running statistics updated in view order."""
    cast, order = callers_autocast(views[0].device.type), BatchNormOrder(model)

    def online(i: int) -> Callable[[], tuple]:
        def job() -> tuple:
            with order.view(i), torch.autocast(**cast):
                f, z = model.encode(views[i])
                return f, z, model.predictor(z)
        return job

    with order:
        return tuple(map(list, zip(*pool.run([online(i) for i in range(len(views))]))))


def split_on_view_threads(model: "SiameseMethod", views: list[torch.Tensor], params: list[torch.Tensor],
                          pool: ViewThreads, pairs: tuple[tuple[int, int], ...]
                          ) -> tuple[list, list, list[torch.Tensor]]:
    """The gradient split's g1 and g2 per parameter and ‖∂l/∂p_i‖² per view (probes/gradients.py
    `split_terms`) for the online target, a view per thread: term 1 of pair (i, j) reaches view i's
    branch only, term 2 view j's, so thread k takes the terms that reach its own view, and the
    two views' parts are summed here. Its backward runs outside autocast, as the training step's."""
    _, zs, ps = online_pass(model, views, pool)
    n, weight = len(params), term_weight(model, pairs)

    def terms(k: int) -> Callable[[], tuple]:
        def job() -> tuple:
            term1 = [model.wide_pair_loss(ps[k], zs[j].detach()) for i, j in pairs if i == k]
            term2 = [model.wide_pair_loss(ps[i].detach(), zs[k]) for i, j in pairs if j == k]
            g1 = torch.autograd.grad(term1, params + [ps[k]], weighted(term1, weight), retain_graph=True,
                                     allow_unused=True)
            g2 = torch.autograd.grad(term2, params, weighted(term2, weight), allow_unused=True)
            return g1[:n], g1[n], g2
        return job

    parts = pool.run([terms(k) for k in range(len(views))])
    return ([_sum(p[0][i] for p in parts) for i in range(n)], [_sum(p[2][i] for p in parts) for i in range(n)],
            [p[1].float().pow(2).sum() for p in parts if p[1] is not None])


def _sum(grads: Iterator[torch.Tensor | None]) -> torch.Tensor | None:
    """The views' gradients of one parameter added in view order (None where none reached it)."""
    present = [g for g in grads if g is not None]
    return sum(present[1:], present[0]) if present else None


def weighted(losses: list[torch.Tensor], weight: float) -> list[torch.Tensor]:
    """The gradient each loss term receives from `SiameseMethod.combine_losses` (`term_weight`)."""
    return [torch.full_like(t, weight) for t in losses]


def callers_autocast(device: str) -> dict:
    """The calling thread's autocast setting, for the view threads to take over (it is per thread)."""
    return dict(device_type=device, dtype=torch.get_autocast_dtype(device), enabled=torch.is_autocast_enabled(device))


def term_weight(model: "SiameseMethod", pairs: tuple) -> float:
    """What `SiameseMethod.combine_losses` hands each pair's loss in the backward: 1 for a sum, 1/n for a mean."""
    return 1.0 if model.cfg.symmetrize == "sum" else 1.0 / len(pairs)
