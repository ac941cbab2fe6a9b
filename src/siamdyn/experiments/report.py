"""`siamdyn report DIR`: findings.md (+ figures) from the run directories of an experiment alone.

Order: the protocol and compute, the controls (and whether they behave), the three-valued
verdicts, the literature table, the gradient split before any collapse, a section per grid
with time-to-collapse curves, then the post-hoc analyses H7–H9.
"""
from __future__ import annotations

import glob
import json
import os
import statistics

from siamdyn.errors import SiamdynError
from siamdyn.experiments.claims import CLAIMS, Claim
from siamdyn.experiments.grids import BUDGETS, CONTROLS, FEATURE_BUDGET, GRIDS, NEGATIVE, POSITIVE, grid_cells
from siamdyn.experiments.readings import (COLLAPSED_RATIO, HEALTHY_RATIO, RANK_FLOOR, WINDOW, Run, load_run,
                                          time_to_collapse, window_mean, window_ratio, window_state)
from siamdyn.experiments.report_figures import plot_curves
from siamdyn.experiments.report_format import mean_std as _ms
from siamdyn.experiments.verdicts import Verdict, binary_verdict, trend_verdict
from siamdyn.runs import atomic_write_text

STABLE = 0.3  # the negative control's RankMe(p) may vary by at most 30 % across the window


def load_groups(out: str) -> dict[str, list[Run]]:
    """"grid/cell" → its finished runs, for every cell of every grid."""
    groups: dict[str, list[Run]] = {}
    for grid in GRIDS:
        for cell in grid_cells(grid):
            key = f"{cell.grid}/{cell.name}"
            if key not in groups:
                paths = sorted(glob.glob(os.path.join(out, cell.grid, cell.name, "seed*")))
                groups[key] = [r for r in map(load_run, paths) if r is not None]
    return groups


def min_rank(run: Run) -> float | None:
    z, p = window_mean(run, "heldout/z_erank"), window_mean(run, "heldout/p_erank")
    return None if z is None or p is None else min(z, p)


def check_controls(groups: dict[str, list[Run]]) -> tuple[bool, list[str]]:
    """Whether the controls behave: the negative one healthy and stable through the window,
    the positive ones collapsed by half the run and through the window."""
    ref = groups.get(f"controls/{NEGATIVE}", [])
    problems = []
    if not ref:
        return False, ["the negative control has no finished run"]
    for run in ref:
        p = [run.heldout[s]["heldout/p_erank"] for s in run.window_steps()]
        if p and (max(p) - min(p)) / max(p) > STABLE:
            problems.append(f"{NEGATIVE} seed {run.cfg.seed}: RankMe(p) moves {100 * (max(p) - min(p)) / max(p):.0f} % "
                            "within the window (not settled)")
        rank = min_rank(run)
        if rank is None:
            problems.append(f"{NEGATIVE} seed {run.cfg.seed}: no held-out readings (heldout_every=0?)")
        elif rank < RANK_FLOOR:
            problems.append(f"{NEGATIVE} seed {run.cfg.seed}: RankMe below {RANK_FLOOR} in the window")
    for name in POSITIVE:
        runs = groups.get(f"controls/{name}", [])
        if not runs:
            problems.append(f"{name}: no finished run")
        for run in runs:
            t = time_to_collapse(run, ref)
            if t is None or t > run.steps / 2:
                problems.append(f"{name} seed {run.cfg.seed}: not collapsed by step {run.steps // 2} "
                                f"(window state: {window_state(run, ref)})")
    return not problems, problems


def claim_verdict(claim: Claim, groups: dict[str, list[Run]], controls_ok: bool) -> Verdict:
    ref = groups.get(claim.reference, [])
    if claim.ladder:
        rungs = {x: [v for r in groups.get(c, []) if (v := min_rank(r)) is not None]
                 for x, c in zip(claim.rungs, claim.cells)}
        verdict = trend_verdict(rungs, +1 if claim.predicted == "+" else -1, "value, window RankMe")
    else:
        ratios = [v for c in claim.cells for r in groups.get(c, []) if (v := window_ratio(r, ref)) is not None]
        verdict = binary_verdict(ratios, claim.predicted)
    if not controls_ok and verdict.value != "not run":
        return Verdict("protocol failed", verdict.statistic + " (not a verdict: the controls misbehaved)")
    return verdict


def cell_row(key: str, runs: list[Run], ref: list[Run]) -> str:
    states = [window_state(r, ref) for r in runs]
    ttc = [t for r in runs if (t := time_to_collapse(r, ref)) is not None]
    counts = "/".join(str(states.count(s)) for s in ("collapsed", "partial", "healthy"))
    return (f"| {key} | {len(runs)} | {counts} | "
            f"{_ms([window_ratio(r, ref) for r in runs])} | {_ms([min_rank(r) for r in runs], '{:.1f}')} | "
            f"{_ms([window_mean(r, 'heldout/p_abs_cos') for r in runs], '{:.3f}')} | "
            f"{_ms([_p_std(r) for r in runs])} | "
            f"{statistics.median(ttc) if ttc else '—'} | {_ms([r.final_loss() for r in runs], '{:.3f}')} | "
            f"{_ms([r.summary['final_knn_acc'] for r in runs], '{:.1f}')} |")


TABLE_HEAD = ["| run group | seeds | collapsed/partial/healthy | rank ratio | min RankMe(z, p) | mean abs cos(p) | "
              "p std·√d | median step of collapse | final loss | kNN % |", "|---|---|---|---|---|---|---|---|---|---|"]


def _p_std(run: Run) -> float | None:
    """Window mean of the per-dimension std of p/‖p‖ times √d (SimSiam fig. 2: ≈ 1 healthy, → 0 collapsed)."""
    v = window_mean(run, "heldout/p_std")
    return None if v is None else v * run.cfg.proj_dim ** 0.5


def adequacy(groups: dict[str, list[Run]]) -> str:
    """The budget's adequacy, measured from the controls."""
    ref = groups.get(f"controls/{NEGATIVE}", [])
    ttc = [t for name in POSITIVE for r in groups.get(f"controls/{name}", [])
           if (t := time_to_collapse(r, ref)) is not None]
    moves = []
    for run in ref:
        p = [run.heldout[s]["heldout/p_erank"] for s in run.window_steps()]
        moves += [(max(p) - min(p)) / max(p)] if p else []
    if not ttc or not moves:
        return "Adequacy: not measurable yet (controls missing)."
    steps = ref[0].steps
    return (f"Adequacy: the positive controls collapse by step {max(ttc)} at the latest (median "
            f"{statistics.median(ttc):g}) of {steps}; the measurement window is the last {WINDOW:.0%} "
            f"(steps ≥ {int((1 - WINDOW) * steps)}); "
            f"the negative control's RankMe(p) moves by at most {100 * max(moves):.0f} % across the window.")


def baseline_line(out: str, budget: str) -> str:
    """kNN of raw pixels and of a random-init encoder on the same bank (computed once, cached)."""
    path = os.path.join(out, "baseline.json")
    if not os.path.exists(path):
        from siamdyn.baseline import run_baseline
        from siamdyn.config import Config
        cfg = Config.from_preset("simsiam", {k: v for k, v in BUDGETS[budget].items()})
        atomic_write_text(path, json.dumps(run_baseline(cfg), indent=2))
    with open(path) as f:
        b = json.load(f)
    return (f"References on the same bank ({b['train_images']} train, {b['test_images']} test images): weighted kNN "
            f"of raw pixels {b['raw_pixels_weighted_knn']:.1f} %, of the random-init encoder "
            f"{b['random_init_kaiming_weighted_knn']:.1f} %.")


def controls_section(groups: dict[str, list[Run]], ok: bool, problems: list[str], fig_dir: str,
                     refs: str = "") -> list[str]:
    ref = groups.get(f"controls/{NEGATIVE}", [])
    lines = ["## Controls", "", f"Negative control `{NEGATIVE}` (must stay healthy and settle), positive controls "
             f"{', '.join(f'`{p}`' for p in POSITIVE)} (must collapse by half the run). Status: "
             + ("**all behaving**." if ok else "**protocol failed**: " + "; ".join(problems) + "."), "",
             adequacy(groups) + " " + refs, "", *TABLE_HEAD]
    lines += [cell_row(f"controls/{c.name}", groups.get(f"controls/{c.name}", []), ref) for c in CONTROLS]
    if any(groups.get(f"controls/{c.name}") for c in CONTROLS):
        plot_curves({c.name: groups.get(f"controls/{c.name}", []) for c in CONTROLS}, ref,
                    os.path.join(fig_dir, "controls.png"))
        lines += ["", "![controls](figures/findings/controls.png)"]
    return lines + [""]


def grid_section(grid: str, groups: dict[str, list[Run]], verdicts: dict[str, Verdict], fig_dir: str) -> list[str]:
    claims = [c for c in CLAIMS if c.grid == grid]
    ref_key = claims[0].reference if claims else f"controls/{NEGATIVE}"
    ref = groups.get(ref_key, [])
    own = [f"{c.grid}/{c.name}" for c in grid_cells(grid) if c.grid != "controls"]
    lines = [f"## {grid}", ""] + [f"- {c.key}: {c.text} {verdicts[c.key]}" for c in claims]
    lines += ["", f"Rank ratios against `{ref_key}`.", "", *TABLE_HEAD]
    lines += [cell_row(k, groups.get(k, []), ref) for k in [ref_key] + [k for k in own if k != ref_key]]
    present = {k.split("/")[1]: groups[k] for k in [ref_key, *own] if groups.get(k)}
    if len(present) > 1:
        plot_curves(present, ref, os.path.join(fig_dir, f"{grid}.png"))
        lines += ["", f"![{grid}](figures/findings/{grid}.png)"]
    return lines + [""]


def literature_table(verdicts: dict[str, Verdict]) -> list[str]:
    agree = {"supported": "agree", "contradicted": "**disagree**", "inconclusive": "not settled"}
    lines = ["## Literature", "", "| claim | published | ours (standard budget) | agreement | context |",
             "|---|---|---|---|---|"]
    for c in CLAIMS:
        v = verdicts[c.key]
        lines.append(f"| {c.key} | {c.source} | {v.value}: {v.statistic} | {agree.get(v.value, v.value)} | "
                     f"{c.context} |")
    return lines + [""]


def gradient_section(groups: dict[str, list[Run]]) -> list[str]:
    """‖g2‖/‖g1‖ and cos(g1, g2) at the first probed steps, before any collapse."""
    stages = ("stem", "stage1", "stage2", "stage3", "stage4", "projector")
    lines = ["## The gradient split before any collapse", "",
             "‖g2‖/‖g1‖ (and cos(g1, g2)) of the encoder's two gradient terms (docs/seed.md §3) at steps 1, 5 "
             "and 10 (mean ± std over seeds), and per stage at step 1; the outcome of each term alone is the "
             "negative control (term 1 only) and H5 (term 2 only).", "",
             "| run group | step 1 | step 5 | step 10 | " + " | ".join(f"{g} (step 1)" for g in stages) + " |",
             "|---" * (4 + len(stages)) + "|"]
    for key in (f"controls/{NEGATIVE}", *[f"controls/{p}" for p in POSITIVE], "H5/term2-only"):
        by_step: dict[int, list[dict]] = {}
        for r in groups.get(key, []):
            for p in r.probes:
                by_step.setdefault(p["step"], []).append(p)
        if not by_step:
            continue

        def at(step: int, k: str, by_step: dict = by_step) -> str:
            return _ms([p[k] for p in by_step.get(step, []) if k in p])
        cells = [f"{at(t, 'g2_over_g1')} (cos {at(t, 'cos_g1_g2')})" for t in (1, 5, 10)]
        lines.append(f"| {key} | " + " | ".join(cells + [at(1, f"g2_over_g1/{g}") for g in stages]) + " |")
    return lines + [""]


def header(out: str, meta: dict, groups: dict[str, list[Run]], dest: str) -> list[str]:
    runs = [r for rs in groups.values() for r in rs]
    own = sum(r.summary["wall_time_s"] for r in runs)
    wall = sum(s["wall_time_s"] for s in meta["sessions"])
    budget = meta["budget"]
    return ["# Findings: the seed's claims on real images", "",
            f"- protocol: budget `{budget}` — {', '.join(f'{k}={v}' for k, v in BUDGETS[budget].items())}; "
            f"collapse read on the held-out batch, rank ratio vs the healthy reference over the last "
            f"{WINDOW:.0%} of the steps: collapsed < {COLLAPSED_RATIO}, healthy ≥ {HEALTHY_RATIO} "
            f"(or RankMe < {RANK_FLOOR}); verdicts three-valued with bootstrap 95 % intervals over seeds",
            f"- compute: {len(runs)} finished runs, {own / 60:.1f} min of their own wall time; "
            f"{wall / 60:.1f} min over {len(meta['sessions'])} session(s) of `siamdyn experiment`",
            f"- machines (from each run's config.yaml): {machines(runs)}",
            f"- H7–H9 analyse encoders trained longer, under budget `{FEATURE_BUDGET[budget]}` "
            f"({BUDGETS[FEATURE_BUDGET[budget]]['max_steps']} steps, otherwise as above): at "
            f"{BUDGETS[budget]['max_steps']} steps SimSiam's backbone does not yet beat a random-init one",
            f"- commands: `siamdyn experiment all --budget {budget} --out {out}` (resumable; several may share "
            f"the folder, one per core), then `siamdyn report {out}"
            + (f" --out {dest}`" if dest != out else "`"), ""]


def machines(runs: list[Run]) -> str:
    """'N runs on CPU (precision)' per machine kind the runs recorded; older runs recorded none."""
    import yaml
    kinds: dict[str, int] = {}
    for r in runs:
        with open(os.path.join(r.path, "config.yaml")) as f:
            doc = yaml.safe_load(f)
        versions = doc.get("versions", {})
        cpu = versions.get("cpu", "CPU not recorded (runs from before siamdyn 0.3)")
        kind = f"{cpu}, {versions.get('host_cpus', '?')} cores, {doc['config'].get('precision', 'fp32')}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return "; ".join(f"{n} runs on {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def write_report(out: str, dest: str | None = None) -> str:
    """Write DEST/findings.md (default DEST = OUT) and its figures under DEST/figures/findings/."""
    dest = dest or out
    meta_path = os.path.join(out, "experiment.json")
    if not os.path.exists(meta_path):
        raise SiamdynError(f"{out} holds no experiment.json; run `siamdyn experiment NAME --out {out}` first")
    with open(meta_path) as f:
        meta = json.load(f)
    groups = load_groups(out)
    fig_dir = os.path.join(dest, "figures", "findings")
    os.makedirs(fig_dir, exist_ok=True)
    ok, problems = check_controls(groups)
    verdicts = {c.key: claim_verdict(c, groups, ok) for c in CLAIMS}
    refs = baseline_line(out, meta["budget"])
    lines = header(out, meta, groups, dest) + controls_section(groups, ok, problems, fig_dir, refs)
    lines += ["## Verdicts", ""] + [f"- **{c.key}** {c.text} {verdicts[c.key]}" for c in CLAIMS] + [""]
    lines += literature_table(verdicts) + gradient_section(groups)
    for grid in ("H2", "H3", "H4", "H5", "H6"):
        lines += grid_section(grid, groups, verdicts, fig_dir)
    from siamdyn.experiments.report_analyses import analysis_sections
    lines += analysis_sections(out, fig_dir)
    path = os.path.join(dest, "findings.md")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
