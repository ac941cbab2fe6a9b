"""Collapse metrics, and the monitor that feeds them to the collapse detector (probes/detector.py).

The SimSiam paper's (fig. 2) measure: the std over a batch of each dimension of the
L2-normalised output, averaged over dimensions. For unit vectors spread isotropically it
is ≈ 1/√d; a collapsed (constant) output gives 0. RankMe catches dimensional collapse
(all outputs on a line) that the std can miss; alignment/uniformity (Wang & Isola 2020)
and the two mean cosines say whether views agree *because* everything agrees. The std and the
plain RankMe presume a head that centres z (SimSiam's BatchNorm); `z_erank_centred` and
`abs_cos_images_centred` read z − its batch mean, so an offset shared by all images (a LayerNorm
head's) does not count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The detector and its thresholds live in probes/detector.py; they are re-exported here, where they always were.
from siamdyn.probes.detector import (COLLAPSE_FRACTION, HEALTHY_FRACTION, RANK_DROP, RANK_FLOOR,  # noqa: F401
                                     SPREAD_DROP, WARN_HORIZON, CollapseDetector, collapse_threshold)


# Each metric returns 0-d tensors: nothing waits for the device, so `collapse_metrics` can
# fetch all numbers of a training step in one host sync (docs/design.md §8).
@torch.no_grad()
def normalized_std(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, min) over dimensions of the per-dimension std of z/‖z‖ over the batch."""
    std = F.normalize(z.float(), dim=1).std(dim=0)
    return std.mean(), std.min()


@torch.no_grad()
def rank_gram(x: torch.Tensor, centred: bool = False) -> torch.Tensor:
    """The smaller Gram matrix of the (N, d) embedding, in float64: its eigenvalues are the
    squared singular values RankMe needs (float64, so squaring loses nothing the entropy sees).
    `centred`: of x − its mean over the batch (in float64), so a direction every row shares —
    the mean of an output not centred by a BatchNorm — does not count as a dimension."""
    x = x.double()
    if centred:
        x = x - x.mean(0)
    return x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T


@torch.no_grad()
def rank_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """RankMe from `rank_gram`'s output. A symmetric eigensolver is several times cheaper than an
    SVD; on a GPU it also waits for its own result (a host sync), so the training loop runs it
    on a host copy of the Gram matrix (probes/deferred.py)."""
    s = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()
    p = s / s.sum().clamp(min=1e-12)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()).float()


def effective_rank(x: torch.Tensor, centred: bool = False) -> torch.Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values
    of the (N, d) embedding matrix. Between 1 (rank one) and min(N, d). `centred`: of the rows
    minus their mean (`rank_gram`), between 1 and min(N − 1, d)."""
    return rank_from_gram(rank_gram(x, centred))


@torch.no_grad()
def alignment(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Wang & Isola (2020) alignment, α = 2: E‖ẑ1 − ẑ2‖² over positive pairs (0 = perfect)."""
    return (F.normalize(z1.float(), dim=1) - F.normalize(z2.float(), dim=1)).pow(2).sum(1).mean()


@torch.no_grad()
def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola (2020) uniformity: log E_{i≠j} exp(−t‖ẑi − ẑj‖²). 0 when collapsed,
    more negative when spread over the sphere (≈ −4 for many points in high dimension)."""
    sq = torch.pdist(F.normalize(z.float(), dim=1)).pow(2)
    return torch.logsumexp(-t * sq, 0) - math.log(sq.numel())


@torch.no_grad()
def mean_cosines(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cos between the two views of an image, mean cos between different images).
    A collapsed encoder has both near 1; a healthy one has the first high, the second low."""
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    gram = a @ a.T
    n = len(a)
    between = (gram.sum() - gram.diagonal().sum()) / max(1, n * (n - 1))
    return (a * b).sum(1).mean(), between


@torch.no_grad()
def abs_cos_centred(z: torch.Tensor) -> torch.Tensor:
    """Mean |cos| between different rows of z − its mean over the batch. Centring removes what
    all images share (an uncentred head's offset), so this reads the spread alone, for any head:
    ≈ √(2/(π·k)) for rows spread over k dimensions, → 1 when they lie on one line. (The signed
    mean is no reading: centred rows sum to zero, which pins it near −1/(N − 1).)"""
    c = F.normalize((z.float() - z.float().mean(0)), dim=1)
    gram = (c @ c.T).abs()
    n = len(c)
    return (gram.sum() - gram.diagonal().sum()) / max(1, n * (n - 1))


METRIC_ORDER = ("z_std", "z_std_min", "p_std", "p_std_min", "z_erank", "z_erank_centred", "feature_erank",
                "alignment", "uniformity", "cos_views", "cos_images", "abs_cos_images_centred")


def collapse_tensors(z: list[torch.Tensor] | torch.Tensor, p: list[torch.Tensor] | torch.Tensor | None = None,
                     features: torch.Tensor | None = None,
                     ranks: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The per-step collapse numbers, still on the device: (0-d tensors by name, the Gram
    matrices of the RankMe metrics by name; none without `ranks`). `finish_metrics` turns
    both into floats."""
    zs = list(z) if isinstance(z, (list, tuple)) else [z]
    if zs[0].shape[0] < 2:  # a shape, read on the host: no sync
        # the std and uniformity are taken over the batch: one sample has none (it used to end in
        # "math domain error" from uniformity's log of zero pairs)
        raise ValueError(f"collapse metrics need at least 2 samples per batch (the std and uniformity are "
                         f"taken over the batch); got z of shape {tuple(zs[0].shape)}")
    z_std, z_std_min = normalized_std(zs[0])
    scalars = {"z_std": z_std, "z_std_min": z_std_min}
    if p is not None:
        scalars["p_std"], scalars["p_std_min"] = normalized_std(p[0] if isinstance(p, (list, tuple)) else p)
    grams = {"z_erank": rank_gram(zs[0]), "z_erank_centred": rank_gram(zs[0], centred=True)} if ranks else {}
    if features is not None and ranks:
        grams["feature_erank"] = rank_gram(features)
    if len(zs) > 1:
        scalars["alignment"] = alignment(zs[0], zs[1])
        scalars["cos_views"], scalars["cos_images"] = mean_cosines(zs[0], zs[1])
    scalars["uniformity"] = uniformity(zs[0])
    scalars["abs_cos_images_centred"] = abs_cos_centred(zs[0])
    return scalars, grams


def stack_scalars(scalars: dict[str, torch.Tensor]) -> torch.Tensor:
    """The 0-d tensors as one float32 vector: one copy (one read) for all of them."""
    return torch.stack([v.float() for v in scalars.values()])


def finish_metrics(names: list[str], values: torch.Tensor, grams: dict[str, torch.Tensor]) -> dict[str, float]:
    """Floats in METRIC_ORDER from `stack_scalars`' vector (named `names`) and the Gram matrices."""
    found = dict(zip(names, values.tolist()))
    found.update({k: float(rank_from_gram(g)) for k, g in grams.items()})
    return {k: found[k] for k in METRIC_ORDER if k in found}


def collapse_metrics(z: list[torch.Tensor] | torch.Tensor, p: list[torch.Tensor] | torch.Tensor | None = None,
                     features: torch.Tensor | None = None) -> dict[str, float]:
    """Every per-step collapse number for one batch, fetched in one host read (and one
    eigensolve per RankMe). `z`: the two views' projector outputs (or one tensor: the
    cross-view numbers are then left out); `p`: the predictor outputs (the first view is
    read); `features`: backbone features."""
    scalars, grams = collapse_tensors(z, p, features)
    return finish_metrics(list(scalars), stack_scalars(scalars), grams)


class CollapseMonitor:
    """The collapse instruments for any training loop. Feed it each step's projector outputs
    of the two views (and optionally the predictor outputs and backbone features):

        monitor = CollapseMonitor(dim=z.shape[1])
        numbers = monitor.update(step, [z1, z2], p=[p1, p2], features=f1)
        if monitor.collapsed: print(monitor.reason, "since step", monitor.collapse_step)

    `update` returns the std of z/‖z‖ and p/‖p‖ (mean and min over dimensions), RankMe of z
    (as published and centred) and of the features, alignment/uniformity, the two mean cosines and
    the centred mean |cos| (`collapse_metrics`); the detector (`CollapseDetector`) dates a collapse
    that has held for `patience` steps and records the first trend warning (`warning_step`).
    """

    def __init__(self, dim: int, fraction: float = COLLAPSE_FRACTION, rank_floor: float = RANK_FLOOR,
                 patience: int = 50, rank_drop: float = RANK_DROP, spread_drop: float = SPREAD_DROP,
                 warn_horizon: int = WARN_HORIZON):
        self.dim = dim
        self.detector = CollapseDetector(dim, fraction, rank_floor, patience, rank_drop, spread_drop, warn_horizon)
        self.last: dict[str, float] = {}
        self.fired = False  # did the last update fire the detector?
        self.warned = False  # did the last update raise the detector's first warning?

    @torch.no_grad()
    def update(self, step: int, z: list[torch.Tensor] | torch.Tensor,
               p: list[torch.Tensor] | torch.Tensor | None = None,
               features: torch.Tensor | None = None) -> dict[str, float]:
        """Read the collapse metrics of `z` (one tensor or one per view), `p` and `features` at `step`,
        feed them to the detector (see `fired`, `warned`) and return them."""
        self.check_dim(z, p)
        return self.feed(step, collapse_metrics(z, p, features))

    def check_dim(self, z: list[torch.Tensor] | torch.Tensor, p: list[torch.Tensor] | torch.Tensor | None) -> None:
        """The collapse threshold is fraction/√dim: z (or p) of another width would be judged
        against the wrong threshold without a word. Shapes only, so nothing waits for the device."""
        for name, t in (("z", z), ("p", p)):
            width = (t[0] if isinstance(t, (list, tuple)) else t).shape[-1] if t is not None else self.dim
            if width != self.dim:
                raise ValueError(f"CollapseMonitor(dim={self.dim}) got {name} of dimension {width}: its collapse "
                                 f"threshold is set for {self.dim}; build it as CollapseMonitor(dim={width})")

    def feed(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """The detector on numbers already read (`collapse_metrics`, or the training loop's
        deferred reading of them)."""
        self.last = metrics
        warned_before = self.detector.warning_step is not None
        self.fired = self.detector.update(step, metrics)
        self.warned = not warned_before and self.detector.warning_step is not None
        return metrics

    @property
    def collapsed(self) -> bool:
        """Has the detector fired (at any update so far)?"""
        return self.detector.step is not None

    @property
    def collapse_step(self) -> int | None:
        """The first step of the streak that fired the detector; None while it has not."""
        return self.detector.step

    @property
    def reason(self) -> str | None:
        """The rule that fired, with its numbers; None while the detector has not fired."""
        return self.detector.reason

    @property
    def warning_step(self) -> int | None:
        """The first step a rule's trend predicted collapse (or a rule went below); None if never."""
        return self.detector.warning_step

    @property
    def warning(self) -> str | None:
        """What the first warning saw (a rule below, or a trend heading below); None if none yet."""
        return self.detector.warning

    def headline(self) -> dict[str, str]:
        """The three numbers a progress bar shows first: min(std z, std p)·√d, RankMe(z) (centred when
        read: an offset shared by all images is no dimension), state (`@step` collapsed, `warn@step`
        warned, `no`)."""
        m = self.last
        if not m:
            return {}
        std = min(m["z_std"], m.get("p_std", m["z_std"])) * math.sqrt(self.dim)
        state = (f"@{self.collapse_step}" if self.collapsed else
                 f"warn@{self.warning_step}" if self.warning_step is not None else "no")
        rank = self.detector.last_rank_centred or self.detector.last_rank or float("nan")
        return {"std": f"{std:.2f}/√d", "rank": f"{rank:.1f}", "collapsed": state}

    def state_dict(self) -> dict:
        """The detector's state, to save beside your checkpoint (`load_state_dict` resumes it)."""
        return self.detector.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Resume the detector from `state_dict()`: its start, trend and streak carry on."""
        self.detector.load_state_dict(state)
