"""torchrun + DDP on 2 CPU processes (gloo): the same losses and weights as one process
over the same global batch with synchronised BN and the same augmentation streams."""
import os
import subprocess
import sys

import torch

from siamdyn.config import Config
from siamdyn.data import AugmentParams, BatchAugment, channel_stats
from siamdyn.distributed import Dist, rank_seed, weights_digest
from siamdyn.methods import SiameseMethod
from siamdyn.optim import build_optimizer, ema_tau, lr_factor, set_lr
from siamdyn.probes.gradients import frozen_buffers
from siamdyn.runs import read_metrics
from siamdyn.runtime import epoch_order, load_data, make_views, rank_batch, setup_torch
from tests.conftest import TINY

STEPS = 4
# A small lr: this tiny net amplifies float rounding ~10x (simsiam) to ~100x (byol) per step at
# lr 0.06 (measured with 1 vs 2 threads in one process), which would hide what we test.
SETTINGS = {**TINY, "max_steps": STEPS, "deterministic": True, "probe_every": 2, "batch_size": 32, "lr": 0.005}


def _torchrun(out, preset, nproc=2, extra=()):
    sets = [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "siamdyn", "train", "--preset", preset, "--out", str(out), "--no-progress", *sets, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _single_process_reference(preset, world=2):
    """One process, one model, BN over the global batch: rank r's rows of every batch come
    from rank r's augmentation stream, in rank order, as under DDP."""
    cfg = Config.from_preset(preset, SETTINGS)
    setup_torch(cfg)
    train_set, _ = load_data(cfg)
    mean, std = channel_stats(train_set.images)
    augment = BatchAugment(AugmentParams.from_config(cfg), mean, std)
    model = SiameseMethod(cfg, 1)
    optimizer = build_optimizer(model, cfg)
    gens = [torch.Generator().manual_seed(rank_seed(cfg.seed, r)) for r in range(world)]
    steps_per_epoch = len(train_set) // cfg.batch_size
    losses = []
    order = epoch_order(cfg, len(train_set), 0)
    for step in range(STEPS):
        shards = [make_views(model, augment, train_set.images[rank_batch(order, step, cfg.batch_size, Dist(r, world))],
                             gens[r])[0]
                  for r in range(world)]
        views = [torch.cat([s[v] for s in shards]) for v in range(2)]
        if step == 0:  # the negative control: BN statistics per rank instead of global
            with torch.no_grad(), frozen_buffers(model):
                local_bn_loss = sum(model(s).loss.item() for s in shards) / world
        set_lr(optimizer, cfg, lr_factor(cfg, step, cfg.epochs * steps_per_epoch, steps_per_epoch))
        result = model(views)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        model.update_target(ema_tau(cfg, step, cfg.epochs * steps_per_epoch))
        losses.append(result.loss.item())
    return losses, model, local_bn_loss


def test_two_gloo_processes_match_one_process_over_the_global_batch(tmp_path):
    for preset in ("simsiam", "byol"):
        out = tmp_path / preset
        _torchrun(out, preset)
        logged = [r["loss"] for r in read_metrics(str(out)) if "loss" in r]
        ref_losses, ref_model, local_bn_loss = _single_process_reference(preset)
        assert len(logged) == STEPS  # one line per step: only rank 0 writes
        # Step 1 runs on identical weights: equal to float rounding. Later steps carry the
        # rounding of a different summation order (BN statistics, gradient averaging) through SGD.
        assert abs(logged[0] - ref_losses[0]) < 1e-6, (logged, ref_losses)
        torch.testing.assert_close(torch.tensor(logged), torch.tensor(ref_losses), rtol=1e-4, atol=5e-5)
        ckpt = torch.load(out / "ckpt" / "last.pt", weights_only=False)
        assert ckpt["world_size"] == 2 and len(ckpt["aug_rng_ranks"]) == 2
        # Both ranks held bit-identical weights, and those are the weights written.
        assert len(set(ckpt["rank_digests"])) == 1
        saved = SiameseMethod(Config.from_preset(preset, SETTINGS), 1)
        saved.load_state_dict(ckpt["model"])
        assert weights_digest(saved) == ckpt["rank_digests"][0]
        for k, v in ref_model.state_dict().items():
            torch.testing.assert_close(ckpt["model"][k].float(), v.float(), rtol=1e-3, atol=1e-4, msg=k)
        assert sorted(os.listdir(out / "ckpt")) == ["last.pt"]
        probes = [r for r in read_metrics(str(out)) if "g1_norm" in r]
        assert [r["step"] for r in probes] == [1, 3] and all(r["g1_norm"] > 0 for r in probes)


def test_distributed_run_resumes_and_rejects_another_world_size(tmp_path):
    out = tmp_path / "run"
    _torchrun(out, "simsiam", extra=["--set", "max_steps=2"])
    from siamdyn.cli import main  # one process cannot continue a 2-process run (per-rank streams)
    assert main(["train", "--out", str(out), "--resume",
                 *[a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")], "--no-progress"]) == 2
    _torchrun(out, "simsiam", extra=["--resume"])
    resumed = torch.load(out / "ckpt" / "last.pt", weights_only=False)
    full = tmp_path / "full"
    _torchrun(full, "simsiam")
    straight = torch.load(full / "ckpt" / "last.pt", weights_only=False)
    assert resumed["step"] == straight["step"] == STEPS
    assert resumed["rank_digests"] == straight["rank_digests"]  # bit-identical
