"""A run is a directory (docs/design.md §4): config.yaml, metrics.jsonl, ckpt/last.pt
(checkpoint.py), summary.json. Writes that must survive a crash go through outputs.py's
atomic writer (temp file + fsync + rename)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from typing import Any, Iterator

import torch
import yaml

from siamdyn import __version__
from siamdyn.inputs import open_input, refuse_special
from siamdyn.checkpoint import CKPT_FILE, CONFIG_FILE, config_digest
from siamdyn.config import Config, coerce_value, resumable_fields
from siamdyn.errors import ConfigError, SiamdynError
from siamdyn.hardware import cpu_model, kernel_env
from siamdyn.outputs import atomic_write, atomic_write_text, os_error_line  # noqa: F401 — runs' writers are the one writer
from siamdyn.toplevel import TRACEBACK_FILE

METRICS_FILE = "metrics.jsonl"


def atomic_save(obj: Any, path: str) -> None:
    """`torch.save(obj)` into `path` through the one writer (outputs.py): atomic, OSError as one line."""
    atomic_write(path, lambda f: torch.save(obj, f))


class MetricsLog:
    """Append-only JSON lines. Each line is written whole with one write call and flushed;
    a line cut short by a crash is skipped by `read_metrics`."""

    def __init__(self, path: str):
        self.path = path
        refuse_special(path)  # appending to a FIFO would block until a reader came
        try:
            self._f = open(path, "a", encoding="utf-8")
        except OSError as e:  # a start that cannot open its log is undone (run_start.py), in one line
            raise SiamdynError(os_error_line(path, e)) from None

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


def read_metrics(run_dir: str, skipped: list[int] | None = None) -> list[dict[str, Any]]:
    """The records of RUN/metrics.jsonl; lines that are not a JSON object are skipped (a crash
    half-writes the last one), their line numbers appended to `skipped` if given."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(path):
        raise SiamdynError(f"{run_dir} is not a run directory (no {METRICS_FILE}); "
                           "pass a folder made by `siamdyn train`")
    return list(_parse_lines(path, skipped))


def _parse_lines(path: str, skipped: list[int] | None = None) -> Iterator[dict[str, Any]]:
    with open_input(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError
            except ValueError:  # half-written by a crash, or damaged (JSONDecodeError is a ValueError)
                if skipped is not None:
                    skipped.append(number)
                continue
            yield record


# What a run directory may hold besides a run's files, and the files a run writes: a folder with
# anything else in it (/, $HOME, a source tree) is no place for a run (its files would mix with others').
# What probe and export make from a run inside it by default: `--overwrite` replaces them with the run.
RUN_DERIVED = ("eval.json", "backbone.pt", "backbone.json")
RUN_ENTRIES = frozenset({CONFIG_FILE, METRICS_FILE, "summary.json", *RUN_DERIVED, "ckpt", "tensorboard", TRACEBACK_FILE,
                         ".lock"})
# Names a writer leaves behind: an atomic write's temp file, a DDP rank's traceback.
TEMP_PREFIXES = (".tmp-", "traceback-rank")
# What an operating system leaves in folders nobody wrote to: a folder holding only these is empty for
# a run (a fresh disk's mount point has lost+found; a folder seen in Finder gets .DS_Store).
OS_LITTER = frozenset({"lost+found", ".DS_Store", "Thumbs.db", "desktop.ini", ".Trashes", ".Spotlight-V100",
                       ".fseventsd", ".directory"})
# A run's own files, which only `siamdyn train` writes: no other command's output may replace them.
RUN_OWN = frozenset({CONFIG_FILE, METRICS_FILE, "summary.json", "ckpt", "tensorboard", ".lock"})


def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE)) or os.path.isfile(os.path.join(path, METRICS_FILE))


def foreign_entries(out: str, own: frozenset[str] = RUN_ENTRIES, own_suffixes: tuple[str, ...] = ()) -> list[str]:
    """The entries of folder `out` that its writer (a run: `own` = RUN_ENTRIES) does not make, temp files
    and OS litter aside; [] for a folder that is missing, empty or unreadable."""
    try:
        names = os.listdir(out)
    except OSError:
        return []
    return sorted(n for n in names if n not in own and n not in OS_LITTER and not n.startswith(TEMP_PREFIXES)
                  and not (own_suffixes and n.endswith(own_suffixes)))


def shown_names(names: list[str]) -> str:
    """The first three names, and how many more: for a one-line message."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_run_dir(out: str, overwrite: bool, resume: bool, lock_free: bool = True) -> None:
    """Refuse to clobber an existing run unless told, and to write a run into a folder that holds
    other files; `resume` needs a checkpoint; a run directory another process is writing is refused
    first. No side effects, so a run that fails later (bad data, bad config) leaves `out` as it was.
    `lock_free=False`: the caller holds the lock."""
    if lock_free:
        check_not_in_use(out)
    has_run = is_run_dir(out)
    if resume:
        if not os.path.exists(os.path.join(out, CKPT_FILE)):
            if has_run:  # killed before its first checkpoint: nothing to resume, and `train` alone is refused
                raise SiamdynError(f"cannot resume: {out} never reached its first checkpoint "
                                   f"({os.path.join(out, CKPT_FILE)} does not exist); start it again with "
                                   "--overwrite instead of --resume")
            raise SiamdynError(f"cannot resume: {os.path.join(out, CKPT_FILE)} does not exist; "
                               "start the run without --resume")
        return
    if has_run and not overwrite:
        raise SiamdynError(f"run directory {out} already holds a run; "
                           "pass --overwrite to replace it or --resume to continue it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise SiamdynError(f"--out {out} is a file, not a folder; choose another --out")
    others = [] if has_run else foreign_entries(out)
    if others:
        raise SiamdynError(f"--out {out} is a folder of other files ({shown_names(others)}), not a run; a run goes "
                           f"into a new or empty folder — choose another --out (e.g. {os.path.join(out, 'run')})")


def refuse_inside_run(path: str, example: str = "") -> None:
    """Refuse an output `path` that is, or lies in, a run directory's own files (config.yaml,
    metrics.jsonl, summary.json, ckpt/, tensorboard/): writing there would break the run
    (`export RUN --out RUN/ckpt/last.pt` would leave it unable to resume or be probed)."""
    full = os.path.realpath(path)  # a link into a run's ckpt/ is the same place
    child, parent = full, os.path.dirname(full)
    while child != parent:
        if os.path.basename(child) in RUN_OWN and is_run_dir(parent):
            fix = f" (e.g. {example})" if example else ""
            raise SiamdynError(f"{path} would replace {os.path.basename(child)} of run {parent}, which only "
                               f"'siamdyn train' writes; choose a path outside the run's own files{fix}")
        child, parent = parent, os.path.dirname(parent)


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
    return Config.from_yaml(path, run=True)


def check_resume_compatible(saved: Config, new: Config, trained: dict[str, Any] | None = None,
                            digest: str | None = None, run_dir: str = "") -> dict[str, list]:
    """Refuse a resume whose config changes a field that is not marked resumable in `Config`;
    return the resumable fields it changes ({name: [was, now]}) so the run can say so. `trained`
    (with its `digest`): the config the checkpoint was trained with; when config.yaml (`saved`)
    no longer matches it, a non-resumable difference is refused and a resumable one is a change."""
    resumable = resumable_fields()
    old = saved.to_dict()
    if trained and digest != config_digest(old):  # digest None (an older checkpoint): compare each value
        trained = _as_read_now(saved, trained)
        edited = [k for k, v in old.items() if k in trained and k not in resumable and trained[k] != v]
        if edited:
            k = edited[0]
            raise ConfigError(f"{os.path.join(run_dir, CONFIG_FILE)} no longer matches the config of its checkpoint "
                              f"({k}: {trained[k]!r} in the checkpoint, {old[k]!r} in config.yaml): one of them was "
                              "edited or replaced since; put it back (change resumable values with --set) or start a "
                              "new run")
        old = {k: trained.get(k, v) for k, v in old.items()}
    diff = [k for k, v in new.to_dict().items() if k not in resumable and old.get(k) != v]
    if diff:
        k = diff[0]
        raise ConfigError(f"--resume with an incompatible config: {k} was {old.get(k)!r}, "
                          f"now {getattr(new, k)!r}; drop the change or start a new run with another --out")
    return {k: [old.get(k), v] for k, v in new.to_dict().items() if old.get(k) != v}


def _as_read_now(cfg: Config, values: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config values as this siamdyn reads config.yaml's (siamdyn 0.1 stored
    compile as a bool, now 'on'/'off'), so an old run's own values do not count as changes."""
    read = {}
    for k, v in values.items():
        try:
            read[k] = coerce_value(cfg, k, v)
        except (SiamdynError, AttributeError, TypeError, ValueError):  # a field this siamdyn no longer has
            read[k] = v
    return read


def run_document(run_dir: str) -> dict[str, Any] | None:
    """A run's whole config.yaml (`config:` and `versions:`), or None where it is empty, damaged or not
    the mapping `siamdyn train` writes (truncated, garbled, hand-made)."""
    with open_input(os.path.join(run_dir, CONFIG_FILE), encoding="utf-8") as f:
        try:
            doc = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError):
            return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("config"), dict) else None


def update_config(out: str, cfg: Config) -> None:
    """config.yaml's values become `cfg`'s (a resume changed resumable ones), its versions kept,
    so that it matches the checkpoints written from now on and a later `--resume` continues them."""
    path = os.path.join(out, CONFIG_FILE)
    doc = run_document(out) or {}
    atomic_write_text(path, yaml.safe_dump({**doc, "config": cfg.to_dict()}, sort_keys=False))


LOCK_FILE = ".lock"


class RunLock:
    """One writer per run directory: an exclusive `fcntl.flock` on OUT/.lock, held for the
    run's life (the kernel drops it when the process dies, so a killed run never leaves a
    stale lock). A second writer gets one line naming the holder's PID and `then` (what to do
    once the holder is done)."""

    def __init__(self, out: str, then: str = "or choose another --out"):
        self.path, self.then = os.path.join(out, LOCK_FILE), then
        self._f = None

    def __enter__(self) -> "RunLock":
        refuse_special(self.path)  # flock on a FIFO or device is unsupported: one line, not "(None)"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            f = open(self.path, "a+")
        except OSError as e:  # the first write into a run: a read-only or foreign folder fails here
            raise SiamdynError(f"cannot write to run directory {os.path.dirname(self.path)} ({e.strerror}); "
                               "fix its permissions, or copy the run to a folder you can write and use that "
                               "as --out") from None
        _lock_or_refuse(f, self.path, then=self.then)
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


def _lock_or_refuse(f: Any, path: str, shared: bool = False, then: str = "or choose another --out") -> None:
    import fcntl
    try:
        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise RunInUse(f"run directory {os.path.dirname(path)} is in use by process {holder}; wait for it to "
                       f"finish (or stop it) {then}") from None


def check_not_in_use(out: str) -> None:
    """Refuse, naming the PID, when another process holds OUT's lock (nothing is created). The
    probe takes a shared lock for an instant, which only an exclusive holder refuses; a writer
    asking for the lock in that instant is refused once (RunLock's callers retry: runner.run_cell)."""
    path = os.path.join(out, LOCK_FILE)
    if not os.path.isfile(path):
        return
    try:
        f = open_input(path)
    except OSError:
        return
    _lock_or_refuse(f, path, shared=True)
    f.close()  # nobody held it exclusively: let the shared lock go again


def run_in_use(out: str) -> bool:
    """Whether a live process holds the run directory's lock (check_not_in_use's probe: it creates
    nothing; a missing, special or unreadable lock file reads as free)."""
    try:
        check_not_in_use(out)
    except RunInUse:
        return True
    return False
