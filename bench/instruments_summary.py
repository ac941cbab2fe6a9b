"""Summarise the runs of bench/instruments_200.sh into bench/results/instruments_200.md."""
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from siamdyn.runs import load_run_config, read_metrics  # noqa: E402

ORDER = ["stem", "stage1", "stage2", "stage3", "stage4", "projector", "predictor"]


def summarise(run: str) -> list[str]:
    cfg = load_run_config(run)
    recs = read_metrics(run)
    steps = [r for r in recs if "loss" in r and "z_erank" in r]  # RankMe may be read every few steps (rank_every)
    probes = [r for r in recs if "g1_norm" in r]
    summary = json.load(open(os.path.join(run, "summary.json")))
    last, first_p, last_p = steps[-1], probes[0], probes[-1]
    speeds = sorted(((k[6:], v) for k, v in last_p.items() if k.startswith("speed/")), key=lambda kv: -kv[1])
    root_d = math.sqrt(cfg.proj_dim)
    name = os.path.basename(run)
    detector = ("step %s (%s)" % (summary["collapse_step"], summary["collapse_reason"]) if summary["collapse_step"]
                else "never fired")
    out = [f"### {name}", "",
           f"- final (step {last['step']}): z std {last['z_std'] * root_d:.3f}/√d, "
           f"p std {last['p_std'] * root_d:.3f}/√d, RankMe(z) {last['z_erank']:.1f}, "
           f"RankMe(features) {last['feature_erank']:.1f}, alignment {last['alignment']:.3f}, "
           f"uniformity {last['uniformity']:.3f}, cos(views) {last['cos_views']:.3f}, "
           f"cos(images) {last['cos_images']:.3f}",
           f"- collapse detector: {detector}; "
           f"kNN after {last['step']} steps: {summary['final_knn_acc']:.2f} %",
           f"- ‖g2‖/‖g1‖ at step {first_p['step']}: {first_p['g2_over_g1']:.3f} (cos {first_p['cos_g1_g2']:.3f}); "
           f"at step {last_p['step']}: {last_p['g2_over_g1']:.3f} (cos {last_p['cos_g1_g2']:.3f})",
           f"- ‖g2‖/‖g1‖ per stage at step {last_p['step']}: " + ", ".join(
               f"{g} {last_p[f'g2_over_g1/{g}']:.2f}" for g in ORDER[:-1] if f"g2_over_g1/{g}" in last_p),
           f"- module speeds ‖Δw‖/‖w‖ at step {last_p['step']}, fastest first: " + " > ".join(
               f"{k} {v:.1e}" for k, v in speeds),
           f"- probes: {len(probes)} (every {cfg.probe_every} steps), {summary['probe_time_s']:.1f} s of "
           f"{summary['wall_time_s']:.0f} s wall ({100 * summary['probe_time_s'] / summary['wall_time_s']:.1f} %)"]
    if "pred_eigs" in last_p:
        out.append(f"- linear predictor at step {last_p['step']}: eigenvector alignment "
                   f"{first_p['pred_eig_alignment']:.3f} → {last_p['pred_eig_alignment']:.3f}, "
                   f"asymmetry ‖W−Wᵀ‖/‖W+Wᵀ‖ {first_p['pred_asymmetry']:.3f} → {last_p['pred_asymmetry']:.3f}, "
                   f"top eig(sym W_p) {', '.join('%.3f' % e for e in last_p['pred_eigs'][:4])}")
    return out + [""]


if __name__ == "__main__":
    runs = sys.argv[1:]
    print("\n".join(line for run in runs for line in summarise(run)))
