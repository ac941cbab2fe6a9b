"""`siamdyn toy` and `siamdyn linear`: the theory, explorable in seconds."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

import numpy as np

from siamdyn.bounds import bounded
from siamdyn.config import coerce_value, parse_overrides
from siamdyn.errors import ConfigError
from siamdyn.outputs import atomic_write_text, output_dir

LINEAR_COMPARISON = {
    "stop-gradient + predictor": {},
    "no stop-gradient": {"stop_gradient": False},
    "no predictor": {"predictor": "none"},
    "EMA target (tau 0.9)": {"tau": 0.9},
    "DirectPred": {"directpred": True},
    "slow predictor (ratio 0.01)": {"predictor_lr_ratio": 0.01},
}


def cmd_toy(args: argparse.Namespace) -> int:
    from siamdyn.theory import figures, toy
    result = toy.summary(args.phi0, args.theta0, args.t_end, args.ratio)
    steps = int(round(args.t_end / args.lr))
    result["gradient_descent"] = {"lr": args.lr, "steps": steps, "variants": {}}
    for v in toy.VARIANTS:
        gd = toy.gradient_descent(v, args.phi0, args.theta0, args.lr, args.ratio, steps)
        result["gradient_descent"]["variants"][v] = {"phi": float(gd["phi"][-1]), "theta": float(gd["theta"][-1]),
                                                     "collapsed": bool(toy.collapsed(gd["theta"][-1]))}
    ratios = np.geomspace(0.25, 64, 17)
    sweep = toy.ratio_sweep(ratios, args.sweep_phi0, args.sweep_theta0, lr=0.01, t_end=100.0)
    result["ratio_sweep"] = {"phi0": args.sweep_phi0, "theta0": args.sweep_theta0, **sweep}
    result["initial_speed_ratio"] = toy.initial_speed_ratio(args.phi0, args.theta0, args.ratio)
    result["speed_vs_basin"] = toy.speed_vs_basin()
    if not args.no_plots:
        output_dir(args.out, None)  # toy regenerates its own files in --out
        paths = [figures.toy_trajectories(args.phi0, args.theta0, args.t_end, args.ratio,
                                          os.path.join(args.out, "toy_trajectories.png"), args.lr),
                 figures.toy_phase_portrait(args.t_end, args.ratio, os.path.join(args.out, "toy_phase_portrait.png")),
                 figures.toy_ratio_sweep(sweep, args.sweep_phi0, args.sweep_theta0,
                                         os.path.join(args.out, "toy_ratio_sweep.png"))]
        basin_path, fractions = figures.toy_basins((0.25, 0.5, 1, 2, 4, 8, 16), args.t_end,
                                                   os.path.join(args.out, "toy_basins.png"))
        result["basin_collapse_fraction"] = fractions
        result["figures"] = paths + [basin_path]
        atomic_write_text(os.path.join(args.out, "toy.json"), json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"toy model l = (φθ − θ)², φ0={args.phi0}, θ0={args.theta0}, t={args.t_end}, lr ratio {args.ratio}")
    print(f"{'variant':<16}{'φ(T)':>10}{'θ(T)':>10}  verdict   (GD, lr {args.lr}: φ, θ)")
    for v in toy.VARIANTS:
        r, g = result["variants"][v], result["gradient_descent"]["variants"][v]
        print(f"{v:<16}{r['phi']:>10.3f}{r['theta']:>10.3f}  {'collapse ' if r['collapsed'] else 'healthy  '}"
              f" ({g['phi']:.3f}, {g['theta']:.3f})")
    c = result["conserved_quantity"]
    print(f"stop-gradient invariant {c['formula']}: {c['initial']:.6f} → {c['final']:.6f} "
          f"(max drift {c['max_abs_drift']:.1e})")
    s = result["ratio_sweep"]
    print(f"critical lr ratio from φ0={s['phi0']}, θ0={s['theta0']}: predicted φ0²/θ0² = "
          f"{s['predicted_critical_ratio']:.3g}, smallest safe ratio in the sweep = {s['measured_critical_ratio']}")
    print(f"from ({args.phi0}, {args.theta0}) the predictor starts {result['initial_speed_ratio']:.3g}× as fast as "
          "the encoder (|dφ/dt| / |dθ/dt| under stop-gradient)")
    sb = result["speed_vs_basin"]
    print(f"speed vs basin ({sb['runs']} random starts with φ0 < 0, random r): the basin (r > φ0²/θ0²) predicts "
          f"{100 * sb['basin_predicts']:.1f} % of outcomes, 'the predictor starts faster' "
          f"{100 * sb['speed_predicts']:.1f} %")
    for name, row in sb["table"].items():
        print(f"  {name:<36} {row['collapsed']:>4} of {row['runs']:>4} collapsed")
    if not args.no_plots:
        print("figures: " + ", ".join(result["figures"]))
    return 0


def linear_setup_from(items: list[str]):
    from siamdyn.theory.linear import LinearSetup
    base = LinearSetup()
    names = {f.name for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for key, value in parse_overrides(items).items():
        if key not in names:
            raise ConfigError(f"unknown linear-model key {key!r}; keys: {', '.join(sorted(names))}")
        changes[key] = coerce_value(base, key, value)  # type: ignore[arg-type]
    return dataclasses.replace(base, **changes).validate()


def cmd_linear_sweep(base: Any, out: str) -> int:
    """Weight decay × relative predictor lr × τ against Tian et al.'s predictions."""
    from siamdyn.theory.sweep import TAUS, prediction, rank_table, run_sweep
    rows = run_sweep(base)
    checks = [prediction(rows, "weight_decay", -1), prediction(rows, "predictor_lr_ratio", +1)]
    for wd in sorted({r["weight_decay"] for r in rows}):
        check = prediction([r for r in rows if r["weight_decay"] == wd], "predictor_lr_ratio", +1)
        checks.append({**check, "knob": f"predictor_lr_ratio at η = {wd:g}"})
    lines = [f"Surviving rank of W (of {base.output_dim}) after {base.steps} steps, mean over 3 seeds.", ""]
    for tau in TAUS:
        lines += [f"τ = {tau:g}:", "", *rank_table(rows, tau), ""]
    lines += [f"- {c['knob']}: Spearman ρ with rank(W) = {c['rho']:+.2f}; predicted sign "
              f"{'+' if c['predicted_sign'] > 0 else '−'}: **{c['verdict']}**" for c in checks]
    output_dir(out, None)  # the sweep regenerates its own files in --out
    atomic_write_text(os.path.join(out, "linear_sweep.json"), json.dumps({"rows": rows, "checks": checks}, indent=2))
    atomic_write_text(os.path.join(out, "linear_sweep.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def cmd_linear(args: argparse.Namespace) -> int:
    from siamdyn.theory import figures
    from siamdyn.theory.linear import train_linear
    base = linear_setup_from(args.set or [])
    if args.sweep:
        return cmd_linear_sweep(base, args.out)
    runs = LINEAR_COMPARISON if args.compare else {"run": {}}
    results = {}
    for name, change in runs.items():
        setup = dataclasses.replace(base, **change).validate()
        res = train_linear(setup)
        results[name] = {"setup": res["setup"], **res["final"]}
        if not args.no_plots:
            slug = name.split(" (")[0].replace(" + ", "_").replace(" ", "_").replace("-", "_").lower()
            results[name]["figure"] = figures.linear_run(
                res["history"],
                f"{name}: rank(W)={res['final']['rank_W']}, alignment={res['final']['alignment'] or float('nan'):.4f}",
                os.path.join(args.out, f"linear_{slug}.png"))
    if not args.no_plots:
        atomic_write_text(os.path.join(args.out, "linear.json"), json.dumps(results, indent=2))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'run':<30}{'rank W':>8}{'alignment':>11}  verdict")
    for name, r in results.items():
        align = "n/a" if r["alignment"] is None else f"{r['alignment']:.4f}"
        print(f"{name:<30}{r['rank_W']:>8}{align:>11}  {'collapse' if r['collapsed'] else 'no collapse'}")
    return 0


def add_theory_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toy", help="the scalar toy model of docs/seed.md §4 (ODE, GD, phase portrait, basins)")
    # each number's range: finite, and t-end / lr (the discrete GD's steps) at most 1e7
    p.add_argument("--phi0", type=bounded(float, "[-100, 100]", "--phi0"), default=0.6, help="in [-100, 100]")
    p.add_argument("--theta0", type=bounded(float, "[-100, 100]", "--theta0"), default=0.1, help="in [-100, 100]")
    p.add_argument("--t-end", type=bounded(float, "(0, 1e3]", "--t-end"), default=20.0, help="in (0, 1e3]")
    p.add_argument("--ratio", type=bounded(float, "(0, 1e3]", "--ratio"), default=1.0,
                   help="predictor / encoder learning-rate ratio, in (0, 1e3]")
    p.add_argument("--lr", type=bounded(float, "[1e-4, 1]", "--lr"), default=0.05,
                   help="encoder step size of the discrete GD, in [1e-4, 1]")
    p.add_argument("--sweep-phi0", type=bounded(float, "[-100, 100]", "--sweep-phi0"), default=-0.6,
                   help="start of the lr-ratio sweep, in [-100, 100]")
    p.add_argument("--sweep-theta0", type=bounded(float, "[-100, 100]", "--sweep-theta0"), default=0.2,
                   help="in [-100, 100]")
    p.add_argument("--out", default="runs/toy")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_toy)

    p = sub.add_parser("linear", help="linear networks of Tian et al. 2021: eigenvalues, alignment, rank")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a LinearSetup field (repeatable)")
    p.add_argument("--sweep", action="store_true",
                   help="weight decay × relative predictor lr × τ against Tian et al.'s predictions")
    p.add_argument("--compare", action="store_true",
                   help="run the standard comparison (sg, no sg, no predictor, EMA, DirectPred, slow predictor)")
    p.add_argument("--out", default="runs/linear")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_linear)
