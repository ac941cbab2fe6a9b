"""HookMonitor in a plain training loop that is not changed: its readings equal the explicit instruments'
(CollapseMonitor, gradient_split, ModuleSpeeds) on the same steps, and the run's weights are bit-identical
to those of the same loop run with the explicit ones (which change nothing: tests/test_probes.py)."""

import os
import re

import pytest
import torch
import torch.nn as nn

from siamdyn import CollapseMonitor, Config, ModuleSpeeds, SiameseMethod, gradient_split
from siamdyn.probes.hooks import HookMonitor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADS = {"proj_hidden": 32, "proj_dim": 32, "pred_hidden": 8}
STEPS, EVERY, PROBE_EVERY = 8, 2, 3


def _method(seed: int = 0) -> SiameseMethod:
    torch.manual_seed(seed)
    mlp = nn.Sequential(nn.Linear(24, 48), nn.BatchNorm1d(48), nn.ReLU(), nn.Linear(48, 16), nn.BatchNorm1d(16),
                        nn.ReLU())
    return SiameseMethod(Config.from_preset("simsiam", HEADS), backbone=mlp, feature_dim=16)


def _batches(n: int = STEPS, batch: int = 16):
    """Two noisy views of points around 6 cluster centres: a tiny real SimSiam task."""
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(6, 24, generator=g) * 2
    for _ in range(n):
        x = centres[torch.randint(6, (batch,), generator=g)]
        yield [x + 0.5 * torch.randn(x.shape, generator=g), x + 0.5 * torch.randn(x.shape, generator=g)]


def _plain_loop(method: SiameseMethod, optimizer: torch.optim.Optimizer) -> None:
    """The user's loop, as it was before any instrument (and a no-grad evaluation pass on the way)."""
    for i, views in enumerate(_batches()):
        out = method(views)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if i == 3:
            with torch.no_grad():
                method.eval()
                method(views)  # a validation pass: no step for the monitor
                method.train()


def _reference_loop(method: SiameseMethod, optimizer: torch.optim.Optimizer, groups: dict) -> dict[int, dict]:
    """The same loop with the explicit instruments of docs/api.md at the monitor's steps."""
    monitor, speeds, records = CollapseMonitor(dim=32), ModuleSpeeds({**groups, "predictor": method.predictor}), {}
    for step, views in enumerate(_batches(), start=1):
        probe = (step - 1) % PROBE_EVERY == 0
        record = dict(gradient_split(method, views, groups=groups)) if probe else {}
        record.pop("dl_dp_norm", None)
        out = method(views)
        optimizer.zero_grad()
        out.loss.backward()
        if probe:
            speeds.snapshot()
        optimizer.step()
        if probe:
            record.update(speeds.measure())
        if (step - 1) % EVERY == 0:
            record.update(monitor.update(step, out.z, out.p, out.features[0]))
        records[step] = record
    return records


def test_the_hook_monitor_reads_what_the_explicit_instruments_read_and_changes_nothing():
    hooked, reference = _method(), _method()
    groups_by_path = {"layer1": "backbone.0", "layer2": "backbone.3"}
    logged: list[tuple[dict, int]] = []
    opt_h = torch.optim.SGD(hooked.parameters(), lr=0.05, momentum=0.9)
    with pytest.warns(UserWarning, match="in no group"):  # groups leave the backbone's BatchNorms out
        monitor = HookMonitor(hooked, z="projector", p="predictor", features="backbone", groups=groups_by_path,
                              every=EVERY, probe_every=PROBE_EVERY, optimizer=opt_h,
                              logger=lambda m, s: logged.append((m, s)))
    _plain_loop(hooked, opt_h)
    groups = {"layer1": reference.backbone[0], "layer2": reference.backbone[3], "projector": reference.projector}
    with pytest.warns(UserWarning, match="in no group"):
        expected = _reference_loop(reference, torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9), groups)

    for a, b in zip(reference.state_dict().values(), hooked.state_dict().values()):
        assert torch.equal(a, b)  # weights and BatchNorm statistics: the monitor changed nothing
    assert monitor.step == STEPS  # the no-grad evaluation pass was no step
    got = {s: m for m, s in logged}
    assert sorted(got) == sorted(s for s, r in expected.items() if r) == [1, 3, 4, 5, 7]
    assert "g1_norm/layer1" in got[4] and "speed/predictor" in got[7] and "z_std" not in got[4]
    for step, record in expected.items():
        for key, value in record.items():
            assert got[step][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (step, key)
    assert got[1]["collapsed"] == 0.0
    monitor.remove()
    hooked(next(_batches(1)))
    assert monitor.step == STEPS  # hooks off


def test_a_loop_that_calls_the_parts_itself_closes_each_step_and_misnamed_modules_say_so():
    method = _method()
    logged = []
    monitor = HookMonitor(method, z="projector", p="predictor", features="backbone", auto_step=False,
                          probe_every=0, logger=lambda m, s: logged.append(s))
    for views in _batches(3):
        f = [method.backbone(v) for v in views]
        z = [method.projector(x) for x in f]
        p = [method.predictor(x) for x in z]
        monitor.end_forward()
        assert len(z) == len(p) == 2
    assert logged == [1, 2, 3] and monitor.collapse is not None and monitor.collapse.dim == 32
    with pytest.raises(ValueError, match=r"names no submodule of SiameseMethod.*'backbone'"):
        HookMonitor(method, z="proj")
    with pytest.raises(ValueError, match=r"not \(N, d\)"):
        tokens = HookMonitor(nn.Sequential(nn.Linear(4, 8)), z="0")
        tokens.model(torch.randn(2, 5, 4))


def _doc_snippet(marker: str) -> str:
    text = open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8").read()
    return next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if marker in b)


def test_the_docs_hook_monitor_snippet_runs_as_written(capsys):
    scope: dict = {}
    exec(_doc_snippet("from siamdyn import HookMonitor"), scope)
    assert scope["monitor"].step == 10 and "z_erank" in scope["monitor"].last
    assert len(capsys.readouterr().out.splitlines()) == 11  # one line a step, then the verdict
