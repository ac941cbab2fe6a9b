"""`siamdyn COMMAND`: train, demo, baseline, probe, export, plot, experiment, report, toy, linear.

Exit codes: 0 done; 2 a user error (SiamdynError), printed on one line without a traceback;
1 a bug (any other exception): one line, and its traceback saved to a file; 130 Ctrl-C
(toplevel.py). Ctrl-C during training steps stops at a step boundary with a checkpoint (exit 2).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from siamdyn import __version__
from siamdyn.toplevel import internal_error, interrupted

# torch takes seconds to import: Ctrl-C meanwhile must end as quietly as at any other moment. A Ctrl-C
# that lands inside a C extension's import (numpy's, torch's) leaves it half-loaded: the run then went
# on, or failed with "cannot load module more than once". So SIGINT waits, blocked, until the imports
# are done, and is raised here when it is unblocked.
_BLOCK = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
try:
    if _BLOCK:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        from siamdyn.bounds import bounded
        from siamdyn.config import Config, config_help, parse_overrides
        from siamdyn.presets import PRESETS, recipe_overrides
        from siamdyn.errors import ConfigError, SiamdynError
        from siamdyn.runs import load_run_config
        from siamdyn.theory.cli import add_theory_commands
    finally:
        if _BLOCK:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
except KeyboardInterrupt:
    raise SystemExit(interrupted()) from None


def _user_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The values the user set on the command line (flags and --set)."""
    overrides: dict[str, Any] = dict(parse_overrides(args.set or []))
    if getattr(args, "stop_on_collapse", False):
        overrides["stop_on_collapse"] = True
    for flag in ("epochs", "limit", "data_dir", "dataset"):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[flag] = value
    return overrides


def _config_from_args(args: argparse.Namespace, recipe: bool = False) -> Config:
    """The run's config: the preset (named by --preset or by the --config file, which must
    agree), then (training on a dataset with a recipe, unless --paper-recipe) its recipe, then
    the --config file's values, then the user's flags and --set values, which always win."""
    overrides = _user_overrides(args)
    file_values: dict[str, Any] = {}
    preset = args.preset or "simsiam"
    if getattr(args, "config", None):
        file_values = Config.read_yaml(args.config)
        named = file_values.pop("preset", None)
        if named and args.preset and named != args.preset:
            raise ConfigError(f"--preset {args.preset} but {args.config} says preset: {named}; drop one of them")
        preset = named or preset
    if recipe:
        dataset = overrides.get("dataset", file_values.get("dataset", "fashion-mnist"))
        overrides = {**recipe_overrides(preset, dataset), **file_values, **overrides}
    else:
        overrides = {**file_values, **overrides}
    return Config.from_preset(preset, overrides)


def _resume_config(args: argparse.Namespace, out: str) -> Config:
    """`--resume` continues the run's own config.yaml; flags and --set values change it (the
    resume check then refuses any change that is not resumable)."""
    base = load_run_config(out)
    if args.config or args.paper_recipe:
        raise ConfigError(f"--resume continues {out} with its own config.yaml; drop --config/--paper-recipe "
                          "(change resumable values with --set)")
    if args.preset and args.preset != base.preset:
        raise ConfigError(f"--resume continues {out}, a {base.preset} run; drop --preset {args.preset}")
    return Config.from_preset(base.preset, {**base.to_dict(), **_user_overrides(args)})


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="fashion-mnist (default), cifar10, imagefolder, synthetic")
    p.add_argument("--data-dir", help="data folder (default $SIAMDYN_DATA or /usr/share/datasets/fashion-mnist)")
    p.add_argument("--limit", type=int, help="class-balanced subset of N training images")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config field (repeatable)")


def cmd_train(args: argparse.Namespace) -> int:
    if args.help_config:
        print(config_help())
        return 0
    from siamdyn.train import train
    if args.resume and args.out and os.path.exists(os.path.join(args.out, "config.yaml")):
        cfg = _resume_config(args, args.out)
    else:
        cfg = _config_from_args(args, recipe=not args.paper_recipe)
    out = args.out or os.path.join("runs", cfg.preset)
    if os.environ.get("RANK", "0") == "0":
        print(f"siamdyn: {cfg.preset} — {_describe(cfg)}; every value goes to {out}/config.yaml", flush=True)
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from siamdyn.runs import check_run_dir
        check_run_dir(out, args.overwrite, args.resume)  # fail here, in one line, not in N workers
        return _relaunch_under_torchrun(args.nproc, args.argv)
    summary = train(cfg, out, overwrite=args.overwrite, resume=args.resume, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(json.dumps({k: v for k, v in summary.items() if k != "knn"}, indent=2))
        print(f"run written to {out}")
    return 0


def _describe(cfg: Config) -> str:
    """The values that differ from the preset's own (recipe, config file and flags), in one line."""
    preset = Config.from_preset(cfg.preset).to_dict()
    changed = [f"{k}={v}" for k, v in cfg.to_dict().items() if preset.get(k) != v]
    return ("over the preset: " + ", ".join(changed)) if changed else "the preset's own values"


def _relaunch_under_torchrun(nproc: int, argv: list[str]) -> int:
    """`siamdyn train --nproc N ...` = `torchrun --standalone --nproc_per_node N -m siamdyn train ...`."""
    import subprocess
    rest = []
    skip = False
    for a in argv:  # drop --nproc N / --nproc=N
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "siamdyn", *rest]
    print("running: " + " ".join(cmd[2:]), file=sys.stderr)
    proc = subprocess.Popen(cmd)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the workers got this Ctrl-C too: wait while they stop with a checkpoint
        return proc.wait()  # a second Ctrl-C ends the wait (main reports it); torchrun got it too


def cmd_demo(args: argparse.Namespace) -> int:
    from siamdyn.demo import render_table, run_demo, standing
    overrides = parse_overrides(args.set or [])
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    result = run_demo(args.out, steps=args.steps, overwrite=args.overwrite, progress=not args.no_progress,
                      overrides=overrides)
    print(render_table(result))
    print("\n" + standing(result))
    print(f"\nreport: {os.path.join(args.out, 'report.md')}  ({result['wall_time_s']:.0f} s)")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from siamdyn.baseline import run_baseline
    cfg = _config_from_args(args)
    result = run_baseline(cfg, inits=tuple(args.inits.split(",")))
    print(json.dumps(result, indent=2))
    if args.out:
        from siamdyn.runs import atomic_write_text
        atomic_write_text(args.out, json.dumps(result, indent=2))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from siamdyn.probe_run import evaluate_run
    result = evaluate_run(args.run, epochs=args.epochs)
    print(json.dumps(result, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from siamdyn.export import export_backbone
    result = export_backbone(args.run, args.out, overwrite=args.overwrite)
    print(f"backbone of {result['run']} (step {result['step']}, {result['parameters']:,} parameters, "
          f"feature dim {result['feature_dim']}) written to {result['file']}, its input normalisation and "
          f"these lines to {result['card']}; rebuild it with:\n{result['rebuild']}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from siamdyn.plots import plot_runs
    for path in plot_runs(args.runs, args.out, overwrite=args.overwrite):
        print(path)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from siamdyn.experiments.grids import ANALYSED
    from siamdyn.experiments.runner import analysis_path, experiment_status, run_experiment
    if args.status:  # reads only: safe beside the workers training into the same --out
        print("\n".join(experiment_status(args.name, args.budget, args.seeds, args.out, args.only)))
        return 0
    meta = run_experiment(args.name, args.budget, args.seeds, args.out, progress=not args.no_progress, only=args.only)
    pending = args.name in ANALYSED and not os.path.exists(analysis_path(args.out, args.name))
    print(f"{args.name} ({args.budget}) in {meta['sessions'][-1]['wall_time_s'] / 60:.1f} min; "
          + (f"its analysis is pending (said above): run `siamdyn experiment {args.name}` again once it can run"
             if pending else f"write the findings with `siamdyn report {args.out}`"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from siamdyn.experiments.report import write_report
    print(write_report(args.dir, args.out, overwrite=args.overwrite))
    return 0


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one method (a preset plus overrides) into a run directory")
    p.add_argument("--preset", help=f"one of: {', '.join(PRESETS)} (default simsiam, or the --config file's)")
    p.add_argument("--config", help="YAML file of config values (a run's config.yaml works)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", help="run directory (default runs/PRESET)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--nproc", type=bounded(int, "[1, 1024]", "--nproc"), default=1,
                   help="train with N processes (torchrun + DDP; see docs/distributed.md); N in [1, 1024]")
    p.add_argument("--stop-on-collapse", action="store_true", help="end the run when the collapse detector fires")
    p.add_argument("--paper-recipe", action="store_true",
                   help="train with the preset's paper recipe, not the fmnist-small recipe (docs/recipe.md)")
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    _add_data_flags(p)
    p.set_defaults(func=cmd_train)


def _add_findings_parsers(sub: argparse._SubParsersAction) -> None:
    """`experiment` and `report`: the grids of the seed's claims and the findings written from them."""
    p = sub.add_parser("experiment", help="run a named grid H1..H9 (or all): the seed's claims as measurements")
    p.add_argument("name", help="H1 … H9 (or all); core, long (findings v3's scales); Q1, Q1-aug, Q2, Q3 (the seed's "
                   "open questions, docs/open_questions.md)")
    p.add_argument("--budget", default="standard", help="standard (the findings; ≈ 2 h on 2 cores), w4, w16, sgd, "
                   "w4-long (findings v3's scales), q-w4, q-w8, q-sgd-w4 (the open questions), or smoke (CI)")
    p.add_argument("--seeds", type=bounded(int, "[1, 1000]", "--seeds"),
                   help="seeds per cell, in [1, 1000] (default: the budget's: 5 per binary cell, 3 per ladder rung)")
    p.add_argument("--out", default="runs/experiments")
    p.add_argument("--only", metavar="GLOB", help="only the cells whose names match GLOB (comma-separated globs), e.g. "
                   "'eq10-crop*,eq10-no-crop' (the controls always run: every reading is placed between them)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--status", action="store_true", help="print each cell's finished / running / to-do runs and "
                   "the time left, train nothing (safe beside running workers)")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("report", help="write findings.md (+ figures) from an experiment's run directories")
    p.add_argument("dir")
    p.add_argument("--out", help="folder for findings.md and figures/findings/ (default DIR; docs for the project's); "
                   "the report replaces its own earlier ones there")
    p.add_argument("--overwrite", action="store_true", help="replace a findings.md that siamdyn report did not write")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siamdyn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"siamdyn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_train_parser(sub)

    p = sub.add_parser("demo", help="SimSiam vs SimSiam without stop-gradient: collapse as it happens")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=bounded(int, "[1, 1e6]", "--steps"), default=250, help="in [1, 1e6]")
    p.add_argument("--data-dir")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("baseline", help="kNN of raw pixels and of random-init encoders")
    p.add_argument("--preset")
    p.add_argument("--config")
    p.add_argument("--epochs", type=int)
    p.add_argument("--inits", default="kaiming,orthogonal,default,zero")
    p.add_argument("--out", help="also write the numbers to this JSON file")
    _add_data_flags(p)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("probe", help="linear probe and kNN on the frozen backbone of a run")
    p.add_argument("run")
    p.add_argument("--epochs", type=bounded(int, "[1, 1e4]", "--epochs"), default=30,
                   help="linear-probe epochs, in [1, 1e4]")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("export", help="write a run's trained backbone as a plain state_dict (weights_only loadable)")
    p.add_argument("run")
    p.add_argument("--out", help="file to write (default RUN/backbone.pt; its card, with the input normalisation "
                   "and the rebuild lines, goes beside it as .json)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", help="overlay runs: loss, collapse std, kNN")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", default="plots")
    p.add_argument("--overwrite", action="store_true", help="replace PNGs already in --out")
    p.set_defaults(func=cmd_plot)

    _add_findings_parsers(sub)
    add_theory_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; every way it can end is one of the exit codes of the module docstring."""
    try:
        args = build_parser().parse_args(argv)  # inside: a bounded flag's error is a ConfigError
        args.argv = list(argv) if argv is not None else sys.argv[1:]
        return args.func(args)
    except SiamdynError as e:
        print(f"siamdyn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted()
    except Exception as e:  # a bug, not the user's doing: one line, the traceback in a file
        return internal_error(e)


if __name__ == "__main__":
    raise SystemExit(main())
