"""The Lightning callback on a real `lightning.Trainer.fit` (CPU, a few steps, a tiny SimSiam written as a
LightningModule that knows nothing of siamdyn): the instruments' numbers reach the trainer's logger, and
the callback does not change what the module learns."""
import csv
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

L = pytest.importorskip("lightning")  # a guard only: the test extra installs it, so CI runs this file

STEPS = 7


class TinySimSiam(L.LightningModule):
    """A user's own SimSiam: their modules, their loss, their optimiser."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(24, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16))
        self.projector = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 16),
                                       nn.BatchNorm1d(16, affine=False))
        self.predictor = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 16))

    def training_step(self, batch, batch_idx):
        x1, x2 = batch
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean())
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _data() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(6, 24, generator=g) * 2
    x = centres[torch.randint(6, (16 * STEPS,), generator=g)]
    views = (x + 0.5 * torch.randn(x.shape, generator=g), x + 0.5 * torch.randn(x.shape, generator=g))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*views), batch_size=16)


def _fit(tmp_path, callbacks, name):
    torch.manual_seed(0)
    model = TinySimSiam()
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=L.pytorch.loggers.CSVLogger(
        tmp_path, name=name), callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, _data())
    return model, trainer


def test_the_callback_logs_the_instruments_through_the_trainers_logger(tmp_path):
    from siamdyn.lightning import SiamdynCallback
    extra = []
    callback = SiamdynCallback(z="projector", p="predictor", features="backbone", every=2, probe_every=3,
                               logger=lambda m, s: extra.append(s))
    model, trainer = _fit(tmp_path, [callback], "with")
    plain, _ = _fit(tmp_path, [], "without")
    for a, b in zip(model.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)  # weights and BatchNorm statistics as without the callback

    with open(trainer.logger.experiment.metrics_file_path) as f:
        rows = list(csv.DictReader(f))
    by_step: dict[int, dict] = {}
    for row in rows:
        by_step.setdefault(int(row["step"]), {}).update({k: v for k, v in row.items() if v != ""})
    collapse = sorted(s for s, r in by_step.items() if "z_std" in r)
    probes = sorted(s for s, r in by_step.items() if "g1_norm/backbone" in r)
    assert collapse == [1, 3, 5, 7] and probes == [1, 4, 7] and extra == [1, 3, 4, 5, 7]
    for step in probes:
        row = by_step[step]
        assert {"g2_norm/projector", "cos_g1_g2", "speed/backbone", "speed/projector", "speed/predictor"} <= set(row)
        assert float(row["speed/predictor"]) > 0 and float(row["g1_norm"]) > 0
    assert 1 / math.sqrt(16) / 4 < float(by_step[1]["z_std"]) < 1.0 and float(by_step[1]["z_erank"]) > 2
    assert "train_loss" in by_step[STEPS - 1] or "train_loss" in by_step[STEPS]  # the module's own logging goes on
    assert callback.monitor.collapse.dim == 16 and callback.monitor.step == STEPS
    assert not any(m._forward_hooks for m in model.modules())  # the hooks came off at the end of fit


def test_a_module_path_the_model_does_not_have_stops_the_fit_with_its_children_named(tmp_path):
    from siamdyn.lightning import SiamdynCallback
    with pytest.raises(ValueError, match=r"projektor.*'backbone'"):
        _fit(tmp_path, [SiamdynCallback(z="projektor")], "bad")


class ManualSimSiam(TinySimSiam):
    """The same model under manual optimisation: the user calls manual_backward and step."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        loss = super().training_step(batch, batch_idx)
        self.manual_backward(loss)
        opt.step()
        return loss


def test_manual_optimisation_gets_the_same_readings_and_accumulation_is_refused(tmp_path):
    from siamdyn.lightning import SiamdynCallback
    auto = SiamdynCallback(every=1, probe_every=3)
    _fit(tmp_path, [auto], "auto")
    manual = SiamdynCallback(every=1, probe_every=3)
    torch.manual_seed(0)
    trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=1, logger=False, callbacks=[manual],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(ManualSimSiam(), _data())
    assert manual.monitor.step == auto.monitor.step == STEPS
    for key in ("z_std", "g1_norm", "speed/predictor"):  # same model, seed and data: the same numbers
        assert manual.monitor.last[key] == pytest.approx(auto.monitor.last[key], rel=1e-5), key
    with pytest.raises(ValueError, match="accumulate_grad_batches=1"):
        trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, accumulate_grad_batches=2,
                            callbacks=[SiamdynCallback()], enable_checkpointing=False, enable_progress_bar=False)
        trainer.fit(TinySimSiam(), _data())
    scheduler = L.pytorch.callbacks.GradientAccumulationScheduler({0: 2})  # sets it at the first epoch's start
    with pytest.raises(ValueError, match="accumulates 2 batches per step"):
        trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, callbacks=[scheduler,
                            SiamdynCallback()], enable_checkpointing=False, enable_progress_bar=False)
        trainer.fit(TinySimSiam(), _data())
