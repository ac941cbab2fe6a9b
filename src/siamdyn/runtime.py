"""Setting up a run: device and threads, the data, the model wrapped for DDP/compile, the
optimiser, and the batches and views of each step. Training, evaluation, the analyses and
the bench scripts all start here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from siamdyn.config import Config
from siamdyn.data import AugmentParams, BatchAugment, ImageData, channel_stats, load_split
from siamdyn.distributed import Dist, check_batch, rank_seed, sync_batchnorm
from siamdyn.errors import ConfigError, DataError, warn
from siamdyn.methods import SiameseMethod
from siamdyn.methods.parallel_views import ViewThreads, batchnorm_layers, view_threads
from siamdyn.optim import build_optimizer


def pick_device(name: str, ctx: Dist = Dist()) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device("cuda", ctx.local_rank) if name == "cuda" else torch.device(name)


def setup_torch(cfg: Config, ctx: Dist = Dist()) -> torch.device:
    """Threads, the seed of the initial weights (the same on every rank), determinism; the device."""
    threads = cfg.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads > cores and ctx.is_main:
        warn(f"threads={threads} is more than the {cores} cores this process may use; the kernels will "
             "spin against each other (threads=0 uses them all)")
    if not threads and ctx.enabled:  # share the cores of this machine among its processes
        threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world)))
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    set_determinism(cfg.deterministic)
    return pick_device(cfg.device, ctx)


_determinism_ours = False  # whether siamdyn switched torch's deterministic algorithms on (not the user)


def set_determinism(deterministic: bool) -> None:
    """torch.use_deterministic_algorithms for a deterministic run; the next run in this process (an
    experiment runs many) gets it switched off again, unless the user had it on before siamdyn did.
    cuDNN's autotuning (no effect on CPU) picks the fastest convolution for our fixed shapes, except in
    a deterministic run, where a timed choice could differ between a run and its resume."""
    global _determinism_ours
    if deterministic and not torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(True)
        _determinism_ours = True
    elif not deterministic and _determinism_ours:
        torch.use_deterministic_algorithms(False)
        _determinism_ours = False
    torch.backends.cudnn.benchmark = not deterministic


def load_data(cfg: Config) -> tuple[ImageData, ImageData]:
    """(train, test) splits of `cfg.dataset`, checked against each other and the model."""
    root = cfg.resolved_data_dir()
    train = load_split(cfg.dataset, root, "train", cfg.image_size, synthetic_n=cfg.limit).balanced_subset(cfg.limit)
    test = load_split(cfg.dataset, root, "test", cfg.image_size).balanced_subset(cfg.test_limit)
    for name, split in (("train", train), ("test", test)):
        if not len(split):  # an empty test split would report kNN 0.00 %, an empty train split train on nothing
            raise DataError(f"the {name} split of {cfg.dataset}{f' in {root}' if root else ''} holds no images; "
                            "point --data-dir at a copy whose files hold images")
    if train.shape != test.shape:
        raise DataError(f"train images are {train.shape} but test images are {test.shape}; both splits need one shape")
    if min(train.shape[1:]) < 8:
        raise DataError(f"images of {train.shape[1]}x{train.shape[2]} are too small for the ResNet (need >= 8x8); "
                        "resize them with image_size")
    if len(train) and int(train.images.min()) == int(train.images.max()):
        warn(f"every training pixel is {int(train.images.min())}: the images are constant, so nothing can be "
             "learned (the loss will fall to its floor anyway); check the data")
    if cfg.batch_size > len(train):
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the {len(train)} training images; "
                          "lower batch_size or raise limit")
    return train, test


def make_augment(cfg: Config, mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> BatchAugment:
    return BatchAugment(AugmentParams.from_config(cfg), mean.to(device), std.to(device))


def eval_input(cfg: Config, augment: BatchAugment) -> Callable[[torch.Tensor], torch.Tensor]:
    """Un-augmented, normalised input in the model's memory format."""
    return lambda x: augment.normalize(x).contiguous(memory_format=cfg.memory_format)


def epoch_order(cfg: Config, n: int, epoch: int) -> torch.Tensor:
    """The data order depends only on (seed, epoch), so a resumed run sees the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))


def rank_batch(order: torch.Tensor, b: int, batch_size: int, ctx: Dist = Dist()) -> torch.Tensor:
    """This rank's slice of global batch b: the ranks together see what one process would."""
    local = batch_size // ctx.world
    start = b * batch_size + ctx.rank * local
    return order[start:start + local]


def make_views(model: SiameseMethod, augment: BatchAugment, x: torch.Tensor,
               g: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The two online views and the target's extra input (x̄ of eq. 10 from its K views)."""
    fmt = model.cfg.memory_format
    views = [augment(x, g).contiguous(memory_format=fmt), augment(x, g).contiguous(memory_format=fmt)]
    n_extra = model.target.extra_views(model)
    extra = model.target.combine([augment(x, g) for _ in range(n_extra)]) if n_extra else None
    return views, (extra.contiguous(memory_format=fmt) if extra is not None else None)


@dataclass
class Session:
    """Everything a training run is set up with, before its first step."""
    cfg: Config
    ctx: Dist
    device: torch.device
    train_set: ImageData
    test_set: ImageData
    data_mean: torch.Tensor
    data_std: torch.Tensor
    augment: BatchAugment
    model: SiameseMethod  # probes and checkpoints use this, the plain module
    net: torch.nn.Module  # what the step calls: the model, its DDP wrapper, compiled or not
    optimizer: torch.optim.Optimizer
    images: torch.Tensor  # the training images, on the device
    aug_gen: torch.Generator  # this rank's augmentation stream
    steps_per_epoch: int
    schedule_steps: int  # the lr and τ schedules span these
    total_steps: int  # where the run stops (max_steps may stop early on the same schedule)
    compiled: bool = False  # `net` is torch.compile'd (config compile, resolved by choose_compile)
    compile_reason: str = ""
    view_threads: ViewThreads | None = None  # the views' threads (config parallel_views, by choose_parallel_views)
    views_reason: str = ""


def build_session(cfg: Config, ctx: Dist, initial_state: dict | None = None) -> Session:
    """Device, data, model, optimiser and schedules of `cfg`; bad data or config fails here."""
    check_batch(ctx, cfg.batch_size)
    device = setup_torch(cfg, ctx)
    train_set, test_set = load_data(cfg)
    mean, std = channel_stats(train_set.images)
    model = SiameseMethod(cfg, in_channels=train_set.shape[0])
    if initial_state is not None:
        model.load_state_dict(initial_state)
    model = model.to(device, memory_format=cfg.memory_format)
    net = model
    if ctx.enabled:
        if cfg.sync_bn:
            model = sync_batchnorm(model, device)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps_per_epoch = len(train_set) // cfg.batch_size  # drop the last partial batch (BN)
    # epochs=0: max_steps is the whole schedule; otherwise max_steps only stops early, so a run
    # cut short follows the same trajectory as the full one.
    schedule_steps = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.max_steps
    total_steps = min(schedule_steps, cfg.max_steps) if cfg.max_steps else schedule_steps
    compiled, compile_reason = choose_compile(cfg, device, total_steps)
    if compiled:  # the probes and checkpoints keep using `model`, the uncompiled module
        net = torch.compile(net)
    pool, views_reason = choose_parallel_views(cfg, device, ctx, compiled, model)
    aug_gen = torch.Generator(device=device).manual_seed(rank_seed(cfg.seed, ctx.rank))
    return Session(cfg, ctx, device, train_set, test_set, mean, std, make_augment(cfg, mean, std, device), model,
                   net, build_optimizer(model, cfg), train_set.images.to(device), aug_gen, steps_per_epoch,
                   schedule_steps, total_steps, compiled, compile_reason, pool, views_reason)


# torch.compile's first step cost 29 s on an H200 and saved 5.8 ms per later step (width 64, batch
# 1024, bf16: bench/results/instrument_cost_cuda_h200_before.md): it pays back after ≈ 5000 steps.
# On CPUs it was slower than eager (docs/design.md §7), so auto leaves it off there.
COMPILE_MIN_STEPS = 5000


def choose_compile(cfg: Config, device: torch.device, total_steps: int) -> tuple[bool, str]:
    """(compile the training forward?, why) for `cfg.compile` on this device and run length."""
    if cfg.compile != "auto":
        return cfg.compile == "on", f"compile={cfg.compile}"
    if device.type != "cuda":
        return False, "auto: off on CPUs, where it was measured slower"
    if cfg.deterministic:
        return False, "auto: off with deterministic=true (compiled kernels are not covered by its guarantees)"
    if total_steps < COMPILE_MIN_STEPS:
        return False, f"auto: off for a run of {total_steps} < {COMPILE_MIN_STEPS} steps (it would not pay back)"
    # auto must never end a run: a model the compiler cannot handle runs eagerly instead, with a
    # warning (a process-wide dynamo setting: later compile=on runs in this process fall back too)
    import torch._dynamo
    torch._dynamo.config.suppress_errors = True
    return True, f"auto: on for a CUDA run of {total_steps} >= {COMPILE_MIN_STEPS} steps"


def choose_parallel_views(cfg: Config, device: torch.device, ctx: Dist, compiled: bool,
                          model: SiameseMethod) -> tuple[ViewThreads | None, str]:
    """(the views' threads or None, why) for `cfg.parallel_views` (methods/parallel_views.py)."""
    if cfg.parallel_views == "off":
        return None, "parallel_views=off"
    threads = torch.get_num_threads()
    obstacle = ("it runs on CPUs only" if device.type != "cpu" else
                "torchrun runs one process per device" if ctx.enabled else
                "the step is torch.compile'd" if compiled else
                "fuse_views=true encodes the views in one pass" if cfg.fuse_views else
                f"grad_terms={cfg.grad_terms}: the views' backward passes meet in the target branch"
                if cfg.grad_terms != "predictor_branch" else "")
    if cfg.parallel_views == "on":
        if obstacle:
            raise ConfigError(f"parallel_views=on cannot run here: {obstacle}; set parallel_views=auto or off")
        return view_threads(2, max(1, threads // 2)), f"parallel_views=on: {max(1, threads // 2)} thread(s) per view"
    # auto also leaves alone what it cannot prove safe: a deterministic run, fewer threads than views, and a
    # backbone with state besides BatchNorm's (its forward could change it from both threads at once)
    ordered = {id(m) for _, m in batchnorm_layers(model)}
    other_state = any(id(m) not in ordered for m in model.modules() for _ in m.buffers(recurse=False))
    places = [id(m) for _, m in model.named_modules(remove_duplicate=False) if id(m) in ordered]
    shared = len(places) > len(set(places))  # one layer, two uses: its second call in a view would be refused
    obstacle = obstacle or ("deterministic=true" if cfg.deterministic else
                            f"{threads} thread(s) for 2 views" if threads < 2 else
                            "the model has buffers outside BatchNorm" if other_state else
                            "a BatchNorm layer sits in two places of the model" if shared else "")
    if obstacle:
        return None, f"auto: off ({obstacle})"
    return view_threads(2, threads // 2), f"auto: on, {threads // 2} thread(s) per view"
