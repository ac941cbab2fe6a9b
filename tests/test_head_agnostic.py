"""Issue 29: collapse read the same way whatever the projector ends in. Real training runs of tiny models.

A hand-written SimSiam (the user's setting) whose projector ends in LayerNorm starts with cos_images ≈ 0.4
between different images before any update, so the std rule (which presumes SimSiam's centring
BatchNorm) must not judge it; the start-relative spread rule must still date its collapse without
stop-gradient. siamdyn's own BatchNorm-head SimSiam must keep behaving as before.
"""
import io
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from siamdyn import CollapseMonitor, Config
from siamdyn.data import AugmentParams, BatchAugment, channel_stats, load_split
from siamdyn.data.datasets import DEFAULT_DATA_DIRS
from siamdyn.probes.collapse import abs_cos_centred, collapse_metrics, effective_rank
from siamdyn.probes.detector import CollapseDetector
from siamdyn.probes.heldout import representation_stats
from siamdyn.runs import read_metrics
from siamdyn.train import train
from tests.conftest import TINY, needs_fmnist

D = 32  # projector output width of every run here


@pytest.fixture(autouse=True)
def one_thread():
    """Each run on one core (siamdyn's runs here set threads=1 too); restored for the tests after these."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _backbone() -> nn.Sequential:
    """A user's small CNN (16-d features), ending in BatchNorm without a ReLU."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _layernorm_simsiam(act: type[nn.Module], stop_gradient: bool, steps: int,
                       patience: int) -> tuple[CollapseMonitor, list[dict]]:
    """SimSiam written by hand, as the user did: projector Linear-LN-`act`-Linear-LN (no BatchNorm in the
    heads), a bottleneck predictor with LN, −cos loss, with or without stop-gradient on the target."""
    torch.manual_seed(0)
    data = load_split("fashion-mnist", DEFAULT_DATA_DIRS["fashion-mnist"], "test").balanced_subset(2000)
    augment = BatchAugment(AugmentParams(), *channel_stats(data.images))
    backbone = _backbone()
    projector = nn.Sequential(nn.Linear(16, 64), nn.LayerNorm(64), act(), nn.Linear(64, D), nn.LayerNorm(D))
    predictor = nn.Sequential(nn.Linear(D, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, D))
    params = [p for m in (backbone, projector, predictor) for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
    monitor = CollapseMonitor(dim=D, patience=patience)
    g = torch.Generator().manual_seed(0)
    rows = []
    for step in range(1, steps + 1):
        x = data.images[torch.randint(len(data), (64,), generator=g)]
        z1, z2 = (projector(backbone(augment(x, g))) for _ in range(2))
        p1, p2 = predictor(z1), predictor(z2)
        t1, t2 = (z1.detach(), z2.detach()) if stop_gradient else (z1, z2)
        loss = -0.5 * (F.cosine_similarity(p1, t2).mean() + F.cosine_similarity(p2, t1).mean())
        rows.append({"step": step, "loss": loss.item(), **monitor.update(step, [z1, z2], p=[p1, p2]),
                     "fired": monitor.fired})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return monitor, rows


def _first(rows: list[dict], test) -> int | None:
    return next((r["step"] for r in rows if test(r)), None)


def _report(name: str, monitor: CollapseMonitor, rows: list[dict]) -> None:
    """The measured steps, printed for `pytest -s` and the issue's record."""
    print(f"\n{name}: cos_images {rows[0]['cos_images']:.2f} at step 1, ≥ 0.5 from step "
          f"{_first(rows, lambda r: r['cos_images'] >= 0.5)}; collapse dated {monitor.collapse_step}, fired at "
          f"{_first(rows, lambda r: r['fired'])} ({monitor.reason}); warning {monitor.warning_step} "
          f"({monitor.warning})")


# ReLU: cos_images 0.54 before any update (the user's head: 0.60); the detector as it was, std < 0.25/√d held
# 30 steps, dated a collapse at step 7 of the healthy run. GELU: 0.42, so the collapse's crossing of 0.5 is seen.
ACTIVATIONS = pytest.mark.parametrize("act", [nn.ReLU, nn.GELU], ids=["relu", "gelu"])


@needs_fmnist
@ACTIVATIONS
def test_a_healthy_layernorm_head_is_not_flagged(act):
    monitor, rows = _layernorm_simsiam(act, stop_gradient=True, steps=200, patience=1)
    _report(f"LayerNorm head ({act.__name__}), stop-gradient", monitor, rows)
    # The head shares an offset from the start: the std rule, built for a centring BatchNorm, stands aside
    # (the old detector, std < 0.25/√d for one step, fired here).
    assert rows[0]["cos_images"] > 0.2
    assert not monitor.detector.std_valid
    assert min(r["p_std"] for r in rows) < 0.25 / math.sqrt(D)
    # Healthy by its own numbers: the spread between images stays a sizeable part of its start and the
    # spread over directions (centred RankMe) stays well above a line.
    assert min(1 - r["cos_images"] for r in rows) > (1 - rows[0]["cos_images"]) / 8
    assert min(r["z_erank_centred"] for r in rows if "z_erank_centred" in r) > 4
    assert not monitor.collapsed and monitor.collapse_step is None and monitor.warning_step is None


@needs_fmnist
@ACTIVATIONS
def test_a_layernorm_head_without_stop_gradient_is_flagged_within_50_steps_of_cos_half(act):
    monitor, rows = _layernorm_simsiam(act, stop_gradient=False, steps=100, patience=30)  # the user's patience
    _report(f"LayerNorm head ({act.__name__}), no stop-gradient", monitor, rows)
    crossed = _first(rows, lambda r: r["cos_images"] >= 0.5)
    fired = _first(rows, lambda r: r["fired"])
    assert crossed is not None and monitor.collapsed and "cos_images" in monitor.reason
    assert monitor.collapse_step <= crossed + 50 and fired <= crossed + 50
    assert monitor.warning_step is not None and monitor.warning_step <= monitor.collapse_step
    # A true collapse: every image gets one output (its spread between images is gone) ...
    assert 1 - rows[-1]["cos_images"] < 1e-3 and rows[-1]["loss"] < -0.999
    # ... and what is left around the mean is noise, spread over many directions: a centred reading
    # alone would not see this collapse, which is why the spread is judged against its own start.
    assert rows[-1]["z_erank_centred"] > 10

    # Resume: the detector's state (start-of-run readings, trend, streak) survives a checkpoint round trip
    # (weights_only, as siamdyn's checkpoints load) and the resumed detector dates the same collapse.
    metrics = [{k: v for k, v in r.items() if k not in ("step", "loss", "fired")} for r in rows]
    whole, first = CollapseDetector(D, patience=30), CollapseDetector(D, patience=30)
    for step, m in enumerate(metrics, 1):
        whole.update(step, m)
    for step, m in enumerate(metrics[:10], 1):
        first.update(step, m)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = CollapseDetector(D, patience=30)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for step, m in enumerate(metrics[10:], 11):
        resumed.update(step, m)
    assert resumed.state_dict() == whole.state_dict() and resumed.step == monitor.collapse_step


def _siamdyn_run(tmp_path, preset: str, **over) -> tuple[dict, list[dict]]:
    """siamdyn's own loop: its ResNet-18 at width 4, SimSiam's BatchNorm-ended projector, Fashion-MNIST."""
    cfg = Config.from_preset(preset, {**TINY, "dataset": "fashion-mnist", "limit": 1000, "test_limit": 200,
                                      "epochs": 4, "max_steps": 100, "lr": 0.3, "threads": 1, "probe_every": 0,
                                      "knn_every": 0, "collapse_patience": 10, **over})
    out = str(tmp_path / preset)
    summary = train(cfg, out, progress=False)
    return summary, [r for r in read_metrics(out) if "z_std" in r]


@needs_fmnist
def test_siamdyns_batchnorm_simsiam_is_still_not_flagged(tmp_path):
    summary, rows = _siamdyn_run(tmp_path, "simsiam", max_steps=80)  # past the step the control collapses
    assert summary["collapse_step"] is None and summary["collapse_warning_step"] is None
    assert abs(rows[0]["cos_images"]) < 0.2  # a centring head: the std rule holds
    replay = CollapseDetector(D, patience=1)  # not one reading below any threshold
    assert not any(replay.update(r["step"], r) for r in rows) and replay.std_valid
    print(f"\nBatchNorm head, stop-gradient: min std {min(min(r['z_std'], r['p_std']) for r in rows) * D ** .5:.2f}"
          f"/√d, min centred RankMe {min(r['z_erank_centred'] for r in rows):.1f}, max cos_images "
          f"{max(r['cos_images'] for r in rows):.2f}")


@needs_fmnist
def test_siamdyns_batchnorm_simsiam_without_stop_gradient_is_still_flagged_and_stops(tmp_path):
    summary, rows = _siamdyn_run(tmp_path, "simsiam-no-sg", stop_on_collapse=True)
    crossed = _first(rows, lambda r: r["cos_images"] >= 0.5)
    print(f"\nBatchNorm head, no stop-gradient: cos_images ≥ 0.5 from step {crossed}; collapse dated "
          f"{summary['collapse_step']} ({summary['collapse_reason']}), run stopped at {summary['steps']}; "
          f"warning {summary['collapse_warning_step']} ({summary['collapse_warning']})")
    assert summary["stopped_on_collapse"] and summary["collapse_step"] is not None
    assert summary["steps"] == summary["collapse_step"] + 10 - 1  # fired once held 10 steps, and stopped there
    assert crossed is not None and summary["collapse_step"] <= crossed + 50
    assert summary["collapse_warning_step"] <= summary["collapse_step"]
    assert json.dumps(summary)  # the new fields are plain JSON


def test_centred_readings_match_the_heldout_definition():
    """One definition of the centred RankMe for the per-step and the held-out readings."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, D, generator=g) + 5.0  # a large offset shared by every row
    per_step = collapse_metrics([z, z + 0.01 * torch.randn(256, D, generator=g)])
    held = representation_stats(z, "h")
    assert per_step["z_erank_centred"] == pytest.approx(float(held["h_erank_centred"]), rel=1e-6)
    assert per_step["z_erank_centred"] == pytest.approx(float(effective_rank(z - z.mean(0))), rel=1e-5)
    # the offset is one large "dimension" of the uncentred rows; centred, the 32 directions are all there
    assert per_step["z_erank"] < 0.5 * per_step["z_erank_centred"] and per_step["z_erank_centred"] > 25
    assert per_step["cos_images"] > 0.9 and per_step["abs_cos_images_centred"] < 0.25
    line = torch.randn(256, 1, generator=g) * torch.randn(1, D, generator=g) + 5.0  # rows on one line
    assert float(abs_cos_centred(line)) == pytest.approx(1.0, abs=1e-4)


def test_the_std_rule_stands_aside_for_a_head_that_starts_uncentred_and_streaks_need_a_clear_recovery():
    """Numbers, not a run: which rules apply, the hysteresis of a streak, and a trend warning."""
    thr = 0.25 / math.sqrt(D)
    base = {"z_std": 0.9 / math.sqrt(D), "p_std": 0.8 / math.sqrt(D), "z_erank": 20.0, "z_erank_centred": 20.0}
    offset = CollapseDetector(D)  # an uncentred head: a low std alone is no collapse
    assert not offset.update(1, {**base, "cos_images": 0.6, "p_std": 0.1 * thr})
    assert not offset.std_valid and offset.warning_step is None
    centred = CollapseDetector(D)
    assert centred.update(1, {**base, "cos_images": 0.0, "p_std": 0.1 * thr}) and "std" in centred.reason
    # Once below, a reading just above the threshold (below 1.25x) does not restart the count.
    held = CollapseDetector(D, patience=3)
    seq = [0.9 * thr, 1.1 * thr, 0.9 * thr]
    assert [held.update(s, {**base, "cos_images": 0.0, "p_std": v}) for s, v in enumerate(seq, 1)] == [0, 0, 1]
    assert held.step == 1
    # The spread falling steadily towards start/25 warns before it gets there.
    falling = CollapseDetector(D, patience=50)
    for s in range(1, 30):
        falling.update(s, {**base, "cos_images": 1 - 0.5 * 0.8 ** s})
    assert falling.warning_step is not None and "trend" in falling.warning
    assert falling.warning_step < _first([{"step": s, "v": 0.5 * 0.8 ** s} for s in range(1, 30)],
                                         lambda r: r["v"] < 0.5 / 25)
