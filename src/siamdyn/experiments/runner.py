"""`siamdyn experiment NAME`: run a grid's cells × seeds, skipping finished runs and
resuming interrupted ones, then its analysis (H7–H9). Every run is a normal run directory.
Several `siamdyn experiment` processes may share one OUT (one per core, say): each skips
the runs another holds the lock of."""
from __future__ import annotations

import fnmatch
import json
import os
import sys
import time

from tqdm import tqdm

from siamdyn.inputs import read_json, refuse_special
from siamdyn.config import Config
from siamdyn.errors import SiamdynError
from siamdyn.experiments.grids import (ANALYSED, BUDGETS, EXTRA_GRIDS, FORCED, GRIDS, PROBE_EPOCHS, Cell,
                                       analysed_cells, cell_budget, grid_cells, seeds_for)
from siamdyn.runs import (CKPT_FILE, RunInUse, RunLock, atomic_write_text, foreign_entries, is_run_dir,
                          run_in_use, shown_names)

# What an experiment writes into OUT: its session record, the lock on it and one folder per grid.
EXPERIMENT_ENTRIES = frozenset({"experiment.json", ".experiment.lock", "controls", "features", *GRIDS, *EXTRA_GRIDS})


def check_experiment_dir(out: str) -> None:
    """OUT must be new, empty, an experiment folder already (it holds experiment.json: a resumed or
    shared one) or hold only what an experiment writes; never a file, a run of `siamdyn train` or a folder
    of other files (`--out /` would fill the filesystem root with grid folders)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise SiamdynError(f"--out {out} is a file; an experiment writes a folder of runs there — choose another --out")
    if is_run_dir(out):
        raise SiamdynError(f"--out {out} is the run directory of one `siamdyn train` run; an experiment's runs go "
                           f"into a folder of their own — choose another --out (e.g. {out.rstrip(os.sep)}-grid)")
    for name in ("experiment.json", ".experiment.lock"):  # read and locked after every run: checked before the first
        refuse_special(os.path.join(out, name))
    if not os.path.isdir(out) or os.path.exists(os.path.join(out, "experiment.json")):
        return
    # a log a shell redirect made before the first run is the experiment's too; an unreadable folder reads
    # as empty here, and the first write names it and the cause (RunLock)
    others = foreign_entries(out, EXPERIMENT_ENTRIES, own_suffixes=(".log",))
    if others:
        raise SiamdynError(f"--out {out} is a folder of other files ({shown_names(others)}), not an experiment folder; "
                           f"choose a new or empty one (e.g. {os.path.join(out, 'experiment')})")


def cell_config(cell: Cell, budget: str, seed: int) -> Config:
    b = cell_budget(cell, budget)
    return Config.from_preset(cell.preset, {**BUDGETS[b], **cell.overrides, **FORCED.get(b, {}), "seed": seed})


def probe_encoder(run_dir: str, budget: str) -> None:
    """The representation readout: kNN and a linear probe of the final backbone (eval.json),
    unless the budget leaves it out or the run has it."""
    epochs = PROBE_EPOCHS.get(budget, 0)
    if epochs and not os.path.exists(os.path.join(run_dir, "eval.json")):
        from siamdyn.probe_run import evaluate_run
        evaluate_run(run_dir, epochs=epochs, lock_held=True)  # run_cell holds the run's lock


def run_finished(run_dir: str, budget: str) -> bool:
    """Trained (summary.json) and probed where it can be: eval.json, or a budget without a probe, or no
    checkpoint to probe (records copied without one) — what run_cell leaves alone."""
    def has(name: str) -> bool:
        return os.path.exists(os.path.join(run_dir, name))
    return has("summary.json") and (has("eval.json") or not PROBE_EPOCHS.get(budget, 0) or not has(CKPT_FILE))


def run_cell(cell: Cell, budget: str, seed: int, out: str, progress: bool) -> tuple[str, str]:
    """Train one run unless it is finished; (run dir, what happened)."""
    from siamdyn.train import train
    run_dir = cell.run_dir(out, seed)
    if run_finished(run_dir, cell_budget(cell, budget)):
        return run_dir, "done before"
    try:
        lock = RunLock(run_dir).__enter__()
    except RunInUse:  # another `siamdyn experiment` on the same OUT is training it: theirs to finish,
        time.sleep(1.0)  # unless the holder was a `--status` probe, whose shared lock lasts an instant
        try:
            lock = RunLock(run_dir).__enter__()
        except RunInUse:
            return run_dir, "in use"
    try:  # decided under the lock, so no other worker can finish (or start) it in between
        if os.path.exists(os.path.join(run_dir, "summary.json")):
            what = "done before"
        else:
            resume = os.path.exists(os.path.join(run_dir, CKPT_FILE))
            train(cell_config(cell, budget, seed), run_dir, overwrite=not resume, resume=resume, progress=progress,
                  desc=f"{cell.grid}/{cell.name}/s{seed}", lock_held=True)
            what = "resumed" if resume else "trained"
        if os.path.exists(os.path.join(run_dir, CKPT_FILE)):  # records copied without checkpoints: no probe
            probe_encoder(run_dir, cell_budget(cell, budget))
    finally:
        lock.__exit__(None, None, None)
    return run_dir, what


def plan(names: list[str], budget: str, seeds: int | None, only: str | None = None) -> list[tuple[Cell, int]]:
    """The (cell, seed) jobs of some grids, each run directory once: controls first, then seed by
    seed, so that a session cut short has every cell's first seeds. `only`: globs on the cell names,
    comma-separated (the controls always stay: every reading is placed between them)."""
    jobs, seen = [], set()
    globs = None if only is None else [g.strip() for g in only.split(",") if g.strip()]
    if globs is not None:
        check_globs(names, globs)
    for n in names:
        cells = [c for c in grid_cells(n) if globs is None or c.grid == "controls"
                 or any(fnmatch.fnmatchcase(c.name, g) for g in globs)]
        for cell in cells:
            for seed in range(seeds_for(cell, budget, seeds)):
                key = (cell.grid, cell.name, seed)
                if key not in seen:
                    seen.add(key)
                    jobs.append((cell, seed))
    return sorted(jobs, key=lambda job: (job[0].grid != "controls", job[1]))


def check_globs(names: list[str], globs: list[str]) -> None:
    """Every `--only` glob must match a cell of the named grids: a mistyped one would drop its cells unsaid."""
    own = sorted({c.name for n in names for c in grid_cells(n) if c.grid != "controls"})
    missed = [g for g in globs if not any(fnmatch.fnmatchcase(name, g) for name in own)] if globs else [""]
    if missed:
        raise SiamdynError(f"--only {','.join(missed)!r} matches no cell of {', '.join(names)}; its cells: "
                           + (", ".join(own) or "none but the controls"))


def save_session(out: str, session: dict, **fields: object) -> dict:
    """Merge this process's session into OUT/experiment.json under an exclusive lock: workers
    sharing OUT each add their own session (a plain read-modify-write would drop the other's)."""
    import fcntl
    os.makedirs(out, exist_ok=True)
    meta_path = os.path.join(out, "experiment.json")
    refuse_special(os.path.join(out, ".experiment.lock"))
    with open(os.path.join(out, ".experiment.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        meta = read_json(meta_path) if os.path.exists(meta_path) else {"sessions": []}
        meta.update(fields)
        meta["sessions"] = [s for s in meta["sessions"] if s.get("id") != session["id"]] + [session]
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return meta


def check_budget(budget: str, seeds: int | None) -> None:
    if budget not in BUDGETS:
        raise SiamdynError(f"unknown budget {budget!r}; choose one of: {', '.join(BUDGETS)}")
    if seeds is not None and seeds < 1:
        raise SiamdynError("--seeds must be >= 1")


def experiment_status(name: str, budget: str, seeds: int | None, out: str, only: str | None = None) -> list[str]:
    """Per cell of the plan: finished / being trained (its lock held) / to do, and the time left at the
    mean wall time of the finished runs (the cell's own, else all of them): what a worker faces."""
    check_budget(budget, seeds)
    cells: dict[str, list[str]] = {}
    times: dict[str, list[float]] = {}
    for cell, seed in plan(list(GRIDS) if name == "all" else [name], budget, seeds, only):
        run_dir, label = cell.run_dir(out, seed), f"{cell.grid}/{cell.name}"
        done = run_finished(run_dir, cell_budget(cell, budget))
        state = "done" if done else "running" if run_in_use(run_dir) else "to do"
        cells.setdefault(label, []).append(state)
        if done:
            summary = read_json(os.path.join(run_dir, "summary.json"))
            times.setdefault(label, []).append(summary.get("wall_time_s", 0.0))
    every = [t for ts in times.values() for t in ts]
    mean = sum(every) / len(every) if every else 0.0
    left = sum(sum(times[k]) / len(times[k]) if times.get(k) else mean
               for k, states in cells.items() for s in states if s != "done")
    lines = [f"{k}: {states.count('done')}/{len(states)} done" + (f", {states.count('running')} running"
             if "running" in states else "") for k, states in cells.items()]
    total = sum(len(v) for v in cells.values())
    finished = sum(v.count("done") for v in cells.values())
    eta = (f"≈ {left / 3600:.1f} h of one worker left at the finished runs' training wall times (a running run "
           "counted whole, the linear probe not)" if every else "no run finished yet")
    return lines + [f"{name} ({budget}) in {out}: {finished}/{total} runs done; {eta}"]


def run_experiment(name: str, budget: str, seeds: int | None, out: str, progress: bool = True,
                   only: str | None = None) -> dict:
    """Train every run of grid `name` (or all; `only`: the cells whose names match this glob, and the
    controls) that is not finished, then the analyses."""
    check_budget(budget, seeds)
    names = list(GRIDS) if name == "all" else [name]  # "core": findings v3's conditions at a scale
    for n in names:
        grid_cells(n)  # unknown names fail before anything runs
    check_experiment_dir(out)
    session = {"id": f"{os.getpid()}-{time.time_ns()}", "grids": names, "wall_time_s": 0.0, "runs": {}}
    t0 = time.perf_counter()
    meta: dict = {}

    def save_meta() -> None:  # after every run, so a killed session still counts its time
        nonlocal meta
        session["wall_time_s"] = time.perf_counter() - t0
        meta = save_session(out, session, budget=budget, seeds=seeds)

    jobs = plan(names, budget, seeds, only)
    for cell, seed in tqdm(jobs, desc=f"{name} ({budget})", disable=not progress, unit="run"):
        run_dir, what = run_cell(cell, budget, seed, out, progress=False)
        session["runs"][run_dir] = what
        save_meta()
    for n in names:
        if n in ANALYSED:
            run_analysis(n, out, budget, seeds)
            save_meta()
    save_meta()
    return meta


def analysis_path(out: str, grid: str) -> str:
    """Where a grid's post-hoc analysis lands: OUT/<grid>/analysis.json."""
    return os.path.join(out, grid, "analysis.json")


def run_analysis(grid: str, out: str, budget: str, seeds: int | None) -> None:
    """The grid's post-hoc analysis (OUT/<grid>/analysis.json) once every run it reads has finished. One
    worker runs it under a lock; another worker sharing OUT goes on to its next grid instead of repeating it."""
    import fcntl
    from siamdyn.experiments import analyses
    result_path = analysis_path(out, grid)
    n_seeds = seeds or min(seeds_for(c, budget) for c in analysed_cells(grid))  # every cell has these
    unfinished = [c.run_dir(out, s) for c in analysed_cells(grid) for s in range(n_seeds)
                  if not os.path.exists(os.path.join(c.run_dir(out, s), "summary.json"))]
    if unfinished:  # another worker is still training it: its epoch checkpoints are not the encoder
        print(f"siamdyn: {grid} analysis waits for {len(unfinished)} unfinished run(s), e.g. {unfinished[0]}; "
              f"run `siamdyn experiment {grid}` again when they are done", file=sys.stderr)
        return
    lock_path = os.path.join(out, grid, ".analysis.lock")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)  # H7–H9 read other grids' runs: their folder is new
    refuse_special(lock_path)
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"siamdyn: another worker is running the {grid} analysis; this one goes on", file=sys.stderr)
            return
        if not os.path.exists(result_path):
            result = getattr(analyses, f"analyse_{grid.lower()}")(out, budget, n_seeds)
            atomic_write_text(result_path, json.dumps(result, indent=2))
