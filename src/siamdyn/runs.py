"""A run is a directory (docs/design.md §4): config.yaml, metrics.jsonl, ckpt/last.pt
(checkpoint.py), summary.json. Writes that must survive a crash go through temp file +
fsync + rename."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from typing import Any, Iterator

import torch
import yaml

from siamdyn import __version__
from siamdyn.checkpoint import CKPT_FILE, CONFIG_FILE
from siamdyn.config import Config, resumable_fields
from siamdyn.errors import ConfigError, SiamdynError
from siamdyn.hardware import cpu_model, kernel_env
from siamdyn.toplevel import TRACEBACK_FILE

METRICS_FILE = "metrics.jsonl"


def _fsync_dir(path: str) -> None:
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


def atomic_write(path: str, write: callable, mode: str = "wb") -> None:
    """Call `write(file)` on a temp file beside `path`, fsync, then rename over `path`.
    A crash or a full disk leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files get the user's usual mode
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise SiamdynError(f"could not write {path} ({e.strerror}); the previous version is kept — "
                               "free disk space and resume") from None
        raise
    _fsync_dir(folder)


def atomic_save(obj: Any, path: str) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


class MetricsLog:
    """Append-only JSON lines. Each line is written whole with one write call and flushed;
    a line cut short by a crash is skipped by `read_metrics`."""

    def __init__(self, path: str):
        self.path = path
        self._f = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, default=float) + "\n")
        self._f.flush()

    def sync(self) -> None:
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class NullLog:
    """The log of a process that does not write (DDP ranks other than 0)."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(path):
        raise SiamdynError(f"{run_dir} is not a run directory (no {METRICS_FILE}); "
                           "pass a folder made by `siamdyn train`")
    return list(_parse_lines(path))


def _parse_lines(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # half-written by a crash
            if isinstance(record, dict):
                yield record


def check_run_dir(out: str, overwrite: bool, resume: bool, lock_free: bool = True) -> None:
    """Refuse to clobber an existing run unless told; `resume` needs a checkpoint; a run directory
    another process is writing is refused first. No side effects, so a run that fails later (bad
    data, bad config) leaves `out` as it was. `lock_free=False`: the caller holds the lock."""
    if lock_free:
        check_not_in_use(out)
    has_run = os.path.exists(os.path.join(out, CONFIG_FILE)) or os.path.exists(os.path.join(out, METRICS_FILE))
    if resume:
        if not os.path.exists(os.path.join(out, CKPT_FILE)):
            raise SiamdynError(f"cannot resume: {os.path.join(out, CKPT_FILE)} does not exist; "
                               "start the run without --resume")
        return
    if has_run and not overwrite:
        raise SiamdynError(f"run directory {out} already holds a run; "
                           "pass --overwrite to replace it or --resume to continue it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise SiamdynError(f"--out {out} is a file, not a folder; choose another --out")


def prepare_run_dir(out: str, overwrite: bool, resume: bool) -> None:
    """Create `out` (clearing an old run when `overwrite`), once everything else has been checked
    and the caller holds the run's lock."""
    check_run_dir(out, overwrite, resume, lock_free=False)
    if overwrite and not resume:
        for name in (CONFIG_FILE, METRICS_FILE, CKPT_FILE, "summary.json", TRACEBACK_FILE):
            path = os.path.join(out, name)
            if os.path.exists(path):
                os.unlink(path)
        shutil.rmtree(os.path.join(out, "tensorboard"), ignore_errors=True)  # the old run's events
    try:
        os.makedirs(os.path.join(out, "ckpt"), exist_ok=True)
    except OSError as e:
        raise SiamdynError(f"cannot create run directory {out} ({e.strerror}); choose another --out") from None


def truncate_metrics(run_dir: str, last_step: int) -> None:
    """Drop metric lines past `last_step` (written after the checkpoint a resume starts from,
    by a run that was killed), and any half-written line, so the resumed log has no repeats."""
    path = os.path.join(run_dir, METRICS_FILE)
    if os.path.exists(path):
        kept = [r for r in _parse_lines(path) if r.get("step", 0) <= last_step]
        atomic_write_text(path, "".join(json.dumps(r, default=float) + "\n" for r in kept))


def git_commit(where: str | None = None) -> str:
    """The commit of the checkout at `where` (default: siamdyn's own), with "-dirty" when
    tracked files had uncommitted changes (the commit alone would name code that did not run)."""
    try:
        here = where or os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=here,
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_config(out: str, cfg: Config, resolved: dict[str, str] | None = None) -> None:
    """config.yaml: the config, the versions that ran it, and why each `auto` became what it did."""
    env = kernel_env()
    meta = {"siamdyn": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "git_commit": git_commit(), "machine": platform.machine(), "host_cpus": os.cpu_count(),
            "cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            **({"kernel_env": env} if env else {})}
    doc = {"config": cfg.to_dict(), "versions": meta, **({"resolved": resolved} if resolved else {})}
    text = yaml.safe_dump(doc, sort_keys=False)
    atomic_write_text(os.path.join(out, CONFIG_FILE), text)


def load_run_config(run_dir: str) -> Config:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise SiamdynError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return Config.from_yaml(path)


def check_resume_compatible(saved: Config, new: Config) -> dict[str, list]:
    """Refuse a resume whose config changes a field that is not marked resumable in `Config`;
    return the resumable fields it changes ({name: [was, now]}) so the run can say so."""
    resumable = resumable_fields()
    old = saved.to_dict()
    diff = [k for k, v in new.to_dict().items() if k not in resumable and old.get(k) != v]
    if diff:
        k = diff[0]
        raise ConfigError(f"--resume with an incompatible config: {k} was {getattr(saved, k)!r}, "
                          f"now {getattr(new, k)!r}; drop the change or start a new run with another --out")
    return {k: [old.get(k), v] for k, v in new.to_dict().items() if old.get(k) != v}


LOCK_FILE = ".lock"


class RunLock:
    """One writer per run directory: an exclusive `fcntl.flock` on OUT/.lock, held for the
    run's life (the kernel drops it when the process dies, so a killed run never leaves a
    stale lock). A second writer gets one line naming the holder's PID."""

    def __init__(self, out: str):
        self.path = os.path.join(out, LOCK_FILE)
        self._f = None

    def __enter__(self) -> "RunLock":
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            f = open(self.path, "a+")
        except OSError as e:  # the first write into a run: a read-only or foreign folder fails here
            raise SiamdynError(f"cannot write to run directory {os.path.dirname(self.path)} ({e.strerror}); "
                               "fix its permissions, or copy the run to a folder you can write and use that "
                               "as --out") from None
        _lock_or_refuse(f, self.path)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            self._f.close()  # closing releases the lock
            self._f = None


class RunInUse(SiamdynError):
    """Another process holds the run directory's lock."""


def _lock_or_refuse(f: Any, path: str, shared: bool = False) -> None:
    import fcntl
    try:
        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunInUse(f"run directory {os.path.dirname(path)} is in use by process {holder}; wait for it to "
                       "finish (or stop it) or choose another --out") from None


def check_not_in_use(out: str) -> None:
    """Refuse, naming the PID, when another process holds OUT's lock (nothing is created). The
    probe takes a shared lock, which only an exclusive holder refuses, so a writer taking the
    lock at the same moment is not turned away by the probe."""
    path = os.path.join(out, LOCK_FILE)
    if not os.path.isfile(path):
        return
    try:
        f = open(path)
    except OSError:
        return
    _lock_or_refuse(f, path, shared=True)
    f.close()  # nobody held it exclusively: let the shared lock go again
