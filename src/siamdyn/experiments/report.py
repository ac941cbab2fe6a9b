"""`siamdyn report DIR`: findings.md (+ PNGs) from the run directories of an experiment alone.

Each verdict: the claim, the measurement (mean ± std over seeds), the collapse threshold,
the call, and a figure."""
from __future__ import annotations

import glob
import json
import math
import os
import statistics
from typing import Any

from siamdyn.errors import SiamdynError
from siamdyn.experiments.grids import GRIDS, grid_cells
from siamdyn.experiments.report_format import mean_std as _ms
from siamdyn.plots import plot_runs
from siamdyn.probes.collapse import COLLAPSE_FRACTION, RANK_FLOOR, CollapseDetector
from siamdyn.runs import atomic_write_text, load_run_config, read_metrics

THRESHOLD = (f"collapsed = at the end of the run (mean of the last 10 logged steps) min(std z, std p) < "
             f"{COLLAPSE_FRACTION}/√d or RankMe(z) < {RANK_FLOOR}; 'dipped' counts runs whose run-time detector "
             f"saw the condition at some step (BYOL's p std dips early and recovers)")


def cell_stats(out: str, cell, seeds: int) -> dict[str, Any] | None:
    """Final numbers of a cell over its finished seeds (None if none finished)."""
    rows = []
    for seed in range(seeds):
        run = cell.run_dir(out, seed)
        if not os.path.exists(os.path.join(run, "summary.json")):
            continue
        summary = json.load(open(os.path.join(run, "summary.json")))
        recs = read_metrics(run)
        tail = [r for r in recs if "z_std" in r][-10:]
        last = {k: statistics.mean(r[k] for r in tail) for k in ("z_std", "p_std", "z_erank")}
        probes = [r for r in recs if "g1_norm" in r]
        cfg = load_run_config(run)
        d = math.sqrt(cfg.proj_dim)
        end_state = CollapseDetector(cfg.proj_dim, rank_floor=cfg.collapse_rank_floor).below(last)
        rows.append({"collapsed": end_state is not None, "dipped": summary["collapse_step"] is not None,
                     "z_std": last["z_std"] * d, "p_std": last["p_std"] * d, "rank": last["z_erank"],
                     "knn": summary["final_knn_acc"],
                     "g2_over_g1": probes[-1]["g2_over_g1"] if probes else None,
                     "pred_speed_ratio": _speed_ratio(probes[-1]) if probes else None, "run": run})
    if not rows:
        return None
    col = lambda k: [r[k] for r in rows]  # noqa: E731
    return {"n": len(rows), "collapsed": sum(col("collapsed")), "dipped": sum(col("dipped")),
            "z_std": _ms(col("z_std")), "p_std": _ms(col("p_std")), "rank": _ms(col("rank"), "{:.1f}"),
            "knn": _ms(col("knn")), "knn_mean": statistics.mean(col("knn")),
            "g2_over_g1": _ms(col("g2_over_g1")), "pred_speed_ratio": _ms(col("pred_speed_ratio")),
            "runs": col("run")}


def _speed_ratio(probe: dict) -> float | None:
    """Predictor speed over the mean encoder-stage speed (> 1: the predictor moves faster)."""
    enc = [probe[f"speed/{g}"] for g in ("stem", "stage1", "stage2", "stage3", "stage4", "projector")
           if f"speed/{g}" in probe]
    return probe["speed/predictor"] / (sum(enc) / len(enc)) if "speed/predictor" in probe and enc else None


def _table(stats: dict[str, dict], extra: tuple[str, ...] = ()) -> list[str]:
    head = ["cell", "collapsed (runs)", "dipped", "z std·√d", "p std·√d", "RankMe(z)", "kNN %", *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = {"‖g2‖/‖g1‖ (last probe)": "g2_over_g1", "predictor / encoder speed": "pred_speed_ratio"}
    for name, s in stats.items():
        if s is None:
            lines.append(f"| {name} | not run | | | | | |" + " |" * len(extra))
            continue
        cells = [name, f"{s['collapsed']}/{s['n']}", f"{s['dipped']}/{s['n']}", s["z_std"], s["p_std"], s["rank"],
                 s["knn"]] + [s[keys[e]] for e in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _call(stats: dict, healthy: list[str], collapsing: list[str]) -> str:
    ok = all(stats.get(c) and stats[c]["collapsed"] == 0 for c in healthy) and \
         all(stats.get(c) and stats[c]["collapsed"] == stats[c]["n"] for c in collapsing)
    return "**supported**" if ok else "**not supported** (see the table)"


CLAIMS = {
    "H1": ("Without stop-gradient SimSiam collapses; with it, it does not (docs/seed.md §3, SimSiam §4.1).",
           ["simsiam"], ["simsiam-no-sg"], ()),
    "H2": ("Without the predictor SimSiam collapses (SimSiam tab. 1); a linear predictor suffices (DirectPred).",
           ["simsiam", "linear-predictor"], ["no-predictor"], ()),
    "H3": ("An EMA target protects as stop-gradient does; τ = 0 is SimSiam up to the loss form.", [], [], ()),
    "H4": ("The fast/slow argument: a predictor much slower than the encoder loses the protection (docs/seed.md §3).",
           ["pred-lr-x1.0"], ["pred-lr-x0.01"], ("predictor / encoder speed",)),
    "H5": ("Term 2 (through the target branch) drives collapse; term 1 alone does not (docs/seed.md §3).",
           ["predictor_branch"], ["both", "target_branch"], ("‖g2‖/‖g1‖ (last probe)",)),
    "H6": ("Open question of docs/seed.md §6: does eq. (10), target f(x̄) without stop-gradient or predictor, collapse?",
           [], [], ()),
}


def _collapsed_cells(stats: dict, pick) -> str:
    cells = [(n, s) for n, s in stats.items() if s and pick(n)]
    hit = [n for n, s in cells if s["collapsed"] == s["n"]]
    some = [n for n, s in cells if 0 < s["collapsed"] < s["n"]]
    return f"{len(hit)} of {len(cells)} cells collapsed in every seed" + (f", {len(some)} in some" if some else "") + \
        (f" ({', '.join(hit)})" if hit else "")


def _verdict_h3(stats: dict) -> str:
    tau0, ref = stats.get("byol-tau0.0-fixed"), stats.get("simsiam")
    parts = ["Verdict: EMA targets: " + _collapsed_cells(stats, lambda n: n.startswith("byol")) + "."]
    if tau0 and ref:
        parts.append(f"τ = 0 (fixed) vs simsiam: collapsed {tau0['collapsed']}/{tau0['n']} vs {ref['collapsed']}/"
                     f"{ref['n']}, kNN {tau0['knn']} vs {ref['knn']} % (they differ in the loss form — 2−2cos summed "
                     "over both orders vs −cos averaged — and in BYOL's heads and decayed predictor lr).")
    return " ".join(parts)


def _verdict_h6(stats: dict) -> str:
    return ("Verdict: eq. (10) without stop-gradient: " + _collapsed_cells(stats, lambda n: "no-sg" in n)
            + "; with stop-gradient on the x̄ target: "
            + _collapsed_cells(stats, lambda n: "-sg-" in n and "no-sg" not in n) + ".")


SPECIAL_VERDICTS = {"H3": _verdict_h3, "H6": _verdict_h6}


def _grid_section(out: str, grid: str, seeds: int, fig_dir: str) -> list[str]:
    claim, healthy, collapsing, extra = CLAIMS[grid]
    stats = {c.name: cell_stats(out, c, seeds) for c in grid_cells(grid)}
    lines = [f"## {grid}", "", f"Claim: {claim}", "", f"Threshold: {THRESHOLD}.", ""] + _table(stats, extra) + [""]
    if healthy or collapsing:
        lines += [f"Verdict: {_call(stats, healthy, collapsing)} — expected healthy: {', '.join(healthy)}; "
                  f"expected collapsed: {', '.join(collapsing)}.", ""]
    if grid in SPECIAL_VERDICTS:
        lines += [SPECIAL_VERDICTS[grid](stats), ""]
    runs = [(name, s["runs"][0]) for name, s in stats.items() if s]
    if runs:
        plot_runs([r for _, r in runs], os.path.join(fig_dir, grid), names=[n for n, _ in runs])
        lines += [f"![{grid} collapse std of p](figures/{grid}/collapse_p_std.png) "
                  f"![{grid} RankMe](figures/{grid}/effective_rank_z.png)", ""]
    return lines


def _run_wall(run_dir: str) -> float:
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)["wall_time_s"]


def compute_line(out: str, meta: dict) -> str:
    """The budget in compute: every run's own wall time, plus the time of each session that
    no run of it accounts for (the H7–H9 analyses, bookkeeping). Sessions that recorded no
    runs (killed before their first finished) are left out: their runs count by their own times."""
    runs = sorted(glob.glob(os.path.join(out, "H*", "*", "seed*", "summary.json")))
    own = [_run_wall(os.path.dirname(r)) for r in runs]
    rest = sum(max(0.0, s["wall_time_s"] - sum(_run_wall(r) for r, what in s["runs"].items()
                                               if what != "done before"
                                               and os.path.exists(os.path.join(r, "summary.json"))))
               for s in meta["sessions"] if s["runs"])
    median = sorted(own)[len(own) // 2] if own else 0.0
    return (f"- compute: {len(own)} runs, {sum(own) / 60:.1f} min of their own wall time (median {median:.0f} s "
            f"per run) + {rest / 60:.1f} min of analyses and bookkeeping = **{(sum(own) + rest) / 60:.1f} min**")


def write_report(out: str) -> str:
    meta_path = os.path.join(out, "experiment.json")
    if not os.path.exists(meta_path):
        raise SiamdynError(f"{out} holds no experiment.json; run `siamdyn experiment NAME --out {out}` first")
    meta = json.load(open(meta_path))
    seeds = meta["seeds"]
    wall = sum(s["wall_time_s"] for s in meta["sessions"])
    fig_dir = os.path.join(out, "figures")
    lines = ["# Findings: the seed's claims on real images", "",
             f"- budget `{meta['budget']}`, {seeds} seed(s) per cell; wall time of all sessions {wall / 60:.1f} min",
             compute_line(out, meta),
             "- commands: "
             f"{'; '.join(sorted({'siamdyn experiment ' + ','.join(s['grids']) for s in meta['sessions']}))} "
             f"(`--budget {meta['budget']} --seeds {seeds} --out {out}`), then `siamdyn report {out}`", ""]
    from siamdyn.experiments.report_analyses import analysis_sections
    for grid in GRIDS:
        if grid in CLAIMS and any(cell_stats(out, c, seeds) for c in grid_cells(grid)):
            lines += _grid_section(out, grid, seeds, fig_dir)
    lines += analysis_sections(out, fig_dir)
    path = os.path.join(out, "findings.md")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
