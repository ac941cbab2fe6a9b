"""Linear networks (Tian, Chen & Ganguli 2021, "Understanding self-supervised learning
dynamics without contrastive pairs"): f = W x, predictor p = W_p f, target W_a x.

Inputs x ~ N(0, X), two views x1 = x + e1, x2 = x + e2 with e ~ N(0, σ²I) = N(0, X').
For L = ½ E‖W_p W x1 − W_a x2‖² the expected gradients are exact matrices (no sampling):

    ∂L/∂W_p                  = (W_p W (X + X') − W_a X) Wᵀ
    term 1 (predictor branch) = W_pᵀ (W_p W (X + X') − W_a X)          (stop-gradient keeps only this)
    term 2 (target branch)    = W (X + X') − W_p W X                   (when W_a = W, no stop-gradient)

and GD with a small step is the gradient flow. With an EMA target W_a ← τ W_a + (1 − τ) W.
DirectPred (Tian et al.) sets W_p from F = E[f fᵀ] = W (X + X') Wᵀ = U diag(λ) Uᵀ as
U diag(p) Uᵀ with p_j = √λ_j / max √λ + ε, for the *cosine* loss. In this unnormalised L2
model the max-normalisation breaks it: a mode of data variance x grows while
p·x > p²(x + σ²) + weight decay, with p independent of W's scale, so W either grows
without bound (we saw σ_max(W) = 2.7e18 after 4000 steps with p scaled by 0.5) or every
mode decays (p_top = 1 + ε). We therefore use the un-normalised fixed-point form of their
analysis, p_j = g·(√λ_j + ε·√λ_max), g = 1 by default.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class LinearSetup:
    input_dim: int = 16  # n
    output_dim: int = 8  # d
    data_eig_max: float = 1.0  # eigenvalues of X spread geometrically from max to min
    data_eig_min: float = 0.05
    aug_noise: float = 0.3  # σ: augmentation std per input dimension
    stop_gradient: bool = True
    predictor: str = "linear"  # linear | none (W_p = I, fixed)
    directpred: bool = False  # W_p set from the eigendecomposition of F instead of learned
    directpred_eps: float = 0.1
    directpred_gain: float = 1.0  # g in p_j = g·(√λ_j + ε·√λ_max) (see module doc)
    tau: float = 0.0  # EMA of the target; 0 = the online W itself
    weight_decay: float = 0.01
    lr: float = 0.05
    predictor_lr_ratio: float = 1.0
    steps: int = 4000
    init_scale: float = 0.5
    predictor_init_scale: float = 0.1
    seed: int = 0
    record_every: int = 20
    rank_tolerance: float = 1e-2  # singular values below tol · σ_max(W at init) do not count

    def validate(self) -> "LinearSetup":
        from siamdyn.bounds import Bounds, check_bounds
        from siamdyn.errors import ConfigError
        for name, text in LINEAR_BOUNDS.items():  # NaN, ±inf and 1e300 fail here, not in an eigensolver
            check_bounds(name, getattr(self, name), Bounds.parse(text))
        if self.data_eig_min > self.data_eig_max:
            raise ConfigError(f"data_eig_min={self.data_eig_min} exceeds data_eig_max={self.data_eig_max}; "
                              "swap them (the data's eigenvalues spread from max down to min)")
        if self.predictor not in ("linear", "none"):
            raise ConfigError(f"predictor={self.predictor!r}: choose linear or none")
        if self.directpred and self.predictor == "none":
            raise ConfigError("directpred needs predictor=linear")
        return self


# Every number of LinearSetup has a declared range (bounds.py's notation), as the config's knobs do.
LINEAR_BOUNDS = {"input_dim": "[1, 4096]", "output_dim": "[1, 4096]", "data_eig_max": "(0, 1e3]",
                 "data_eig_min": "(0, 1e3]", "aug_noise": "[0, 1e3]", "directpred_eps": "[0, 1e3]",
                 "directpred_gain": "(0, 1e3]", "tau": "[0, 1)", "weight_decay": "[0, 10]", "lr": "(0, 10]",
                 "predictor_lr_ratio": "[0, 1e3]", "steps": "[1, 1e7]", "init_scale": "(0, 1e3]",
                 "predictor_init_scale": "[0, 1e3]", "seed": "[0, 2^32)", "record_every": "[1, 1e7]",
                 "rank_tolerance": "(0, 1)"}


def data_covariances(s: LinearSetup, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """X = Q diag(λ) Qᵀ with a random rotation Q; X' = σ² I."""
    eigs = np.geomspace(s.data_eig_max, s.data_eig_min, s.input_dim)
    q, _ = np.linalg.qr(rng.standard_normal((s.input_dim, s.input_dim)))
    return q @ np.diag(eigs) @ q.T, s.aug_noise ** 2 * np.eye(s.input_dim)


def alignment(wp: np.ndarray, f: np.ndarray) -> float:
    """λ-weighted mean over F's eigenvectors u_i of cos(W_p u_i, u_i): 1 when every
    eigenvector of F is an eigenvector of W_p with a positive eigenvalue."""
    lam, u = np.linalg.eigh(f)
    if lam.max() <= 1e-12:
        return float("nan")
    wpu = wp @ u
    cos = np.einsum("ij,ij->j", wpu, u) / (np.linalg.norm(wpu, axis=0) + 1e-12)
    weights = np.clip(lam, 0, None)
    return float((weights * cos).sum() / weights.sum())


def directpred_predictor(f: np.ndarray, eps: float, gain: float) -> np.ndarray:
    lam, u = np.linalg.eigh(f)
    lam = np.clip(lam, 0, None)
    p = gain * (np.sqrt(lam) + eps * np.sqrt(lam.max()))
    return u @ np.diag(p) @ u.T


def train_linear(s: LinearSetup) -> dict[str, Any]:
    """Run GD on the exact expected loss; returns the history and a verdict."""
    s.validate()
    rng = np.random.default_rng(s.seed)
    X, Xn = data_covariances(s, rng)
    Xv = X + Xn  # E[x1 x1ᵀ]
    n, d = s.input_dim, s.output_dim
    W = s.init_scale * rng.standard_normal((d, n)) / np.sqrt(n)
    Wp = s.predictor_init_scale * rng.standard_normal((d, d)) / np.sqrt(d) if s.predictor == "linear" else np.eye(d)
    Wa = W.copy()
    sigma0 = np.linalg.svd(W, compute_uv=False).max()
    hist: dict[str, list] = {k: [] for k in ("step", "wp_eigs", "f_eigs", "alignment", "w_singular", "loss")}

    def record(step: int) -> None:
        F = W @ Xv @ W.T
        resid = Wp @ W @ Xv @ W.T @ Wp.T - 2 * Wp @ W @ X @ Wa.T + Wa @ Xv @ Wa.T
        hist["step"].append(step)
        hist["wp_eigs"].append(np.sort(np.linalg.eigvalsh((Wp + Wp.T) / 2))[::-1])
        hist["f_eigs"].append(np.sort(np.linalg.eigvalsh(F))[::-1])
        hist["alignment"].append(alignment(Wp, F))
        hist["w_singular"].append(np.linalg.svd(W, compute_uv=False))
        hist["loss"].append(0.5 * float(np.trace(resid)))

    for step in range(s.steps + 1):
        if step % s.record_every == 0 or step == s.steps:
            record(step)
        if step == s.steps:
            break
        if s.directpred:
            Wp = directpred_predictor(W @ Xv @ W.T, s.directpred_eps, s.directpred_gain)
        residual = Wp @ W @ Xv - Wa @ X  # E[(W_p W x1 − W_a x2) x1ᵀ]
        grad_W = Wp.T @ residual  # term 1
        if not s.stop_gradient:
            grad_W = grad_W + (W @ Xv - Wp @ W @ X)  # term 2 (the target is the online W)
        grad_Wp = residual @ W.T
        W = W - s.lr * (grad_W + s.weight_decay * W)
        if s.predictor == "linear" and not s.directpred:
            Wp = Wp - s.lr * s.predictor_lr_ratio * (grad_Wp + s.weight_decay * Wp)
        Wa = W.copy() if s.tau == 0 else s.tau * Wa + (1 - s.tau) * W
    final_sv = hist["w_singular"][-1]
    rank = int((final_sv > s.rank_tolerance * sigma0).sum())
    final_align = hist["alignment"][-1]
    return {"setup": asdict(s), "history": {k: np.array(v) for k, v in hist.items()},
            "final": {"rank_W": rank, "collapsed": rank == 0,
                      "alignment": None if np.isnan(final_align) else final_align,
                      "w_singular_values": final_sv.tolist(), "wp_eigenvalues": hist["wp_eigs"][-1].tolist(),
                      "loss": hist["loss"][-1]}}
