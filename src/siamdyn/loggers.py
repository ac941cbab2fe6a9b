"""Where the instruments' numbers go: one small interface, `Logger.log(metrics, step)`, and its adapters.

    CallableLogger(fn)          fn(metrics, step): print, a list's append, your own sink
    TensorBoardLogger(log_dir)  a TensorBoard event folder (pip install 'siamdyn[tensorboard]')
    WandbLogger(project=...)    a W&B run (pip install 'siamdyn[wandb]'; WANDB_MODE=offline needs no account)
    as_logger(x)                any of these, a plain callable, a list of them, or None (nothing)

The same loggers serve `HookMonitor` and the Lightning callback outside siamdyn's loop, and `siamdyn train`
inside it (`run_log`: metrics.jsonl stays the record, the loggers mirror it; `--set wandb=PROJECT`). Every
logger receives `flat_metrics`' values: nested dicts flattened to "outer/inner", and a value that is not
finite — an undefined ratio, a diverged loss — as None (JSON's null), never inf or NaN. A sink that has no
null (TensorBoard) leaves that value out of the step. Nothing here imports tensorboard or wandb before a
logger of theirs is built, so `import siamdyn` stays light.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Any, Callable, Iterable, Mapping, Protocol, Union, runtime_checkable

from siamdyn.errors import ConfigError, SiamdynError
from siamdyn.tensorboard_log import TENSORBOARD_DIR, check_tensorboard_installed

Metrics = dict[str, Union[float, None]]


@runtime_checkable
class Logger(Protocol):
    """Anything with `log(metrics, step)`; `close()` is called once at the end when it has one."""

    def log(self, metrics: Mapping[str, float | None], step: int) -> None:
        """Record `metrics` (name → float, or None for a value that is not finite) at training step `step`."""


def flat_metrics(record: Mapping[str, Any], prefix: str = "") -> Metrics:
    """The numbers of a record as {name: float | None}: nested dicts give "outer/inner" names, 0-d tensors
    and ints become floats, a non-finite number or a None becomes None; strings, lists and bools are left
    out (they are no scalar a dashboard can plot)."""
    out: Metrics = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_metrics(value, f"{name}/"))
        elif value is None:
            out[name] = None
        elif _is_number(value):
            v = float(value)  # a 0-d tensor is read on the host here
            out[name] = v if math.isfinite(v) else None
    return out


def _is_number(value: Any) -> bool:
    if hasattr(value, "numel") and hasattr(value, "dtype"):  # a tensor: one element, not a flag
        return value.numel() == 1 and "bool" not in str(value.dtype)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's floats too


class CallableLogger:
    """A logger that calls `fn(metrics, step)` with `flat_metrics`' dict."""

    def __init__(self, fn: Callable[[Metrics, int], Any]):
        self.fn = fn

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """fn(flat_metrics(metrics), step)."""
        self.fn(flat_metrics(metrics), step)


# What every instrument's `logger=` takes: a Logger, a callable fn(metrics, step), a list of them, or None.
LoggerTarget = Union[Logger, Callable[[Metrics, int], Any], Iterable[Any], None]


class MultiLogger:
    """Several loggers as one: each gets every record, flattened and cleaned once (`flat_metrics`), so a
    `Logger` of your own never sees inf or NaN; `close` closes each that can be closed."""

    def __init__(self, loggers: Iterable[Logger]):
        self.loggers = list(loggers)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Every logger gets the record at `step`."""
        if not self.loggers:
            return
        flat = flat_metrics(metrics)
        if not flat:  # a line without numbers (a resume's list of changes) is no record
            return
        for logger in self.loggers:
            logger.log(flat, step)

    def flush(self) -> None:
        """Flush each logger that buffers (TensorBoard's writer)."""
        for logger in self.loggers:
            flush = getattr(logger, "flush", None)
            if flush is not None:
                flush()

    def close(self) -> None:
        """Close each logger that can be closed (a W&B run it started is finished)."""
        for logger in self.loggers:
            close = getattr(logger, "close", None)
            if close is not None:
                close()


def as_logger(target: LoggerTarget) -> MultiLogger:
    """One logger from what a user passes: a `Logger`, a plain callable `fn(metrics, step)`, a list or
    tuple of either, or None (no logger: records are dropped)."""
    if target is None:
        return MultiLogger([])
    if isinstance(target, MultiLogger):
        return target
    if isinstance(target, Logger):
        return MultiLogger([target])
    if callable(target):
        return MultiLogger([CallableLogger(target)])
    if isinstance(target, (list, tuple)):
        return MultiLogger(one for t in target for one in as_logger(t).loggers)
    raise TypeError(f"a logger is an object with log(metrics, step), a callable fn(metrics, step), a list of "
                    f"them or None; got {type(target).__name__}")


class TensorBoardLogger:
    """Scalars into a TensorBoard event folder, one tag per number (None values are left out: TensorBoard
    has no null). Give `log_dir`, or an open `writer` (a `SummaryWriter`) to share one."""

    def __init__(self, log_dir: str | None = None, writer: Any = None, purge_step: int | None = None):
        if writer is None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when asked for
            writer = SummaryWriter(log_dir, purge_step=purge_step)
        self.writer = writer

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """One scalar per number at `step`."""
        for tag, value in flat_metrics(metrics).items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        """Write the buffered events to disk."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class WandbLogger:
    """A W&B run: `WandbLogger(project="p", dir=..., config=...)` starts one with `wandb.init(**kwargs)` (and
    finishes it on `close`); `WandbLogger(run=wandb.run)` logs into one you started. Values that are not
    finite are logged as None (null in W&B's history). Set WANDB_MODE=offline to log without an account
    (`wandb sync` uploads the folder later)."""

    def __init__(self, run: Any = None, **init_kwargs: Any):
        check_installed("wandb", "a W&B logger")
        if run is None:
            import wandb
            try:
                run, self._owned = wandb.init(**init_kwargs), True
            except wandb.errors.Error as e:  # no API key, no network: W&B's own words, in one line
                said = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise SiamdynError(f"W&B could not start a run ({said}); run 'wandb login' or check the network, set "
                                   "WANDB_MODE=offline to log without an account, or leave wandb unset") from None
        else:
            self._owned = False
        self.run = run

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """One row of the run's history at `step`."""
        # W&B's own step must not go back; siamdyn's steps only grow, and two records of one step merge
        self.run.log(flat_metrics(metrics), step=step)

    def close(self) -> None:
        """Finish the run if this logger started it (one passed in stays open)."""
        if self._owned:
            self.run.finish()


EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb", "lightning": "lightning"}


def check_installed(module: str, what: str) -> None:
    """A missing optional package is one line naming the extra that installs it."""
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the {module} package: pip install 'siamdyn[{EXTRAS[module]}]'")


class RunLog:
    """The log of a `siamdyn train` run: every line goes to `metrics` (metrics.jsonl, the record) and is
    mirrored to `logger` at the line's step. Lines without a step (none today) mirror at step 0."""

    def __init__(self, metrics: Any, logger: MultiLogger, owned: MultiLogger | None = None):
        self.metrics, self.logger = metrics, logger
        self.owned = logger if owned is None else owned  # the loggers this log made, and so closes

    def write(self, record: dict[str, Any]) -> None:
        """One metrics line: to metrics.jsonl, then to the loggers at its step."""
        self.metrics.write(record)
        self.logger.log({k: v for k, v in record.items() if k != "step"}, int(record.get("step", 0)))

    def sync(self) -> None:
        """metrics.jsonl to disk (before a checkpoint), and the loggers flushed."""
        self.metrics.sync()
        self.logger.flush()

    def close(self) -> None:
        """Close metrics.jsonl and the loggers this log made; the caller's own are flushed and left open."""
        self.metrics.close()
        self.logger.flush()
        self.owned.close()


def check_run_loggers(cfg: Any) -> None:
    """Before a `siamdyn train` run starts: the packages its `tensorboard` / `wandb` settings need."""
    if cfg.tensorboard:
        check_tensorboard_installed()
    if getattr(cfg, "wandb", ""):
        check_installed("wandb", f"wandb={cfg.wandb}")


def run_log(metrics: Any, cfg: Any, out: str, resume_step: int | None = None, loggers: Any = None) -> Any:
    """`siamdyn train`'s log: `metrics` (metrics.jsonl) alone, or mirrored into OUT/tensorboard
    (`tensorboard=true`; on a resume the events a killed run wrote past `resume_step` are purged, as
    truncate_metrics drops its lines), a W&B run (`wandb=PROJECT`: named after OUT, the config attached, its
    files where W&B keeps them, $WANDB_DIR or ./wandb, not in the run directory; each session of a resumed run
    is a W&B run of its own) and `loggers` (`as_logger`)."""
    sinks = list(as_logger(loggers).loggers)  # the caller's MultiLogger stays as it was
    given = len(sinks)
    if cfg.tensorboard:
        purge = resume_step + 1 if resume_step is not None else None
        sinks.insert(0, TensorBoardLogger(os.path.join(out, TENSORBOARD_DIR), purge_step=purge))
    if getattr(cfg, "wandb", ""):
        sinks.append(WandbLogger(project=cfg.wandb, name=os.path.basename(os.path.abspath(out)),
                                 config=cfg.to_dict()))
    return RunLog(metrics, MultiLogger(sinks), owned=MultiLogger(sinks[given:])) if sinks else metrics
