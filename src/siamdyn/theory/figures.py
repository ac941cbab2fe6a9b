"""Figures for the toy model and the linear theory (PNG, matplotlib Agg)."""
from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from siamdyn.plots import save_figure as _save  # noqa: E402 — the one writer: atomic, OSError as one line
from siamdyn.theory import toy  # noqa: E402

LABELS = {"stop_gradient": "stop-gradient (term 1)", "full_gradient": "full gradient (terms 1+2)",
          "term2_only": "term 2 only"}


def toy_trajectories(phi0: float, theta0: float, t_end: float, ratio: float, path: str, lr: float = 0.05) -> str:
    """φ(t) and θ(t) for the three variants (the seed's figures): the flow (solid) and
    discrete GD with step `lr` (dashed, step k drawn at t = k·lr)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    steps = int(round(t_end / lr))
    for ax, v in zip(axes, toy.VARIANTS):
        sol = toy.integrate(v, phi0, theta0, t_end, ratio)
        ax.plot(sol["t"], sol["phi"][0], label="φ (predictor)", color="C0")
        ax.plot(sol["t"], sol["theta"][0], label="θ (encoder)", color="C1")
        gd = toy.gradient_descent(v, phi0, theta0, lr, ratio, steps)
        ax.plot(gd["step"] * lr, gd["phi"], ls="--", color="C0", lw=1, label=f"GD, lr {lr}")
        ax.plot(gd["step"] * lr, gd["theta"], ls="--", color="C1", lw=1)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{LABELS[v]}\nφ(T)={sol['phi'][0, -1]:.3f}, θ(T)={sol['theta'][0, -1]:.3f}", fontsize=10)
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"l = (φθ − θ)², φ0={phi0}, θ0={theta0}, lr ratio {ratio}", fontsize=10)
    return _save(fig, path)


def toy_phase_portrait(t_end: float, ratio: float, path: str, extent: float = 1.5,
                       starts: tuple[tuple[float, float], ...] = ((0.6, 0.1), (-0.6, 0.4), (-0.3, 1.0), (1.4, -0.5),
                                                                  (-1.2, -0.3))) -> str:
    """Vector field (φ̇, θ̇) and trajectories from a few starts, per variant."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    grid = np.linspace(-extent, extent, 21)
    P, T = np.meshgrid(grid, grid)
    for ax, v in zip(axes, toy.VARIANTS):
        dphi, dtheta = toy.velocity(P, T, v, ratio)
        speed = np.hypot(dphi, dtheta) + 1e-12
        ax.quiver(P, T, dphi / speed, dtheta / speed, speed, cmap="Greys", alpha=0.6, scale=30)
        for phi0, theta0 in starts:
            sol = toy.integrate(v, phi0, theta0, t_end, ratio)
            ax.plot(sol["phi"][0], sol["theta"][0], lw=1.6)
            ax.plot([phi0], [theta0], "ko", ms=3)
        ax.axhline(0, color="red", lw=1, ls="--")  # θ = 0: the collapsed set
        ax.axvline(1, color="green", lw=1, ls=":")  # φ = 1: the non-collapsed fixed points
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_title(LABELS[v], fontsize=10)
        ax.set_xlabel("φ (predictor)")
    axes[0].set_ylabel("θ (encoder)")
    return _save(fig, path)


def toy_basins(ratios: tuple[float, ...], t_end: float, path: str, grid: int = 41) -> tuple[str, dict[str, Any]]:
    """Collapsed starts per variant (at ratio 1), and the stop-gradient collapsed fraction vs ratio."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    fractions: dict[str, Any] = {}
    for ax, v in zip(axes, toy.VARIANTS):
        b = toy.basin(v, 1.0, grid, t_end=t_end)
        fractions[v] = b["fraction"]
        ax.imshow(b["collapsed"], origin="lower", cmap="Reds", vmin=0, vmax=1, aspect="auto",
                  extent=(b["phi0"][0], b["phi0"][-1], b["theta0"][0], b["theta0"][-1]))
        ax.set_title(f"{LABELS[v]}: {100 * b['fraction']:.0f}% collapse", fontsize=10)
        ax.set_xlabel("φ0")
    axes[0].set_ylabel("θ0 (red: θ(T) → 0)")
    sweep = [toy.basin("stop_gradient", r, grid, t_end=t_end)["fraction"] for r in ratios]
    fractions["stop_gradient_by_ratio"] = dict(zip([float(r) for r in ratios], sweep))
    axes[3].semilogx(ratios, [100 * s for s in sweep], "o-")
    axes[3].set_xlabel("predictor / encoder lr ratio")
    axes[3].set_ylabel("% of starts that collapse")
    axes[3].set_title("stop-gradient: a faster predictor protects", fontsize=10)
    axes[3].grid(alpha=0.3)
    return _save(fig, path), fractions


def toy_ratio_sweep(sweep: dict[str, Any], phi0: float, theta0: float, path: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.semilogx(sweep["ratios"], np.abs(sweep["theta_final"]) + 1e-300, "o-")
    ax.set_yscale("log")
    ax.axhline(toy.COLLAPSE_THETA, color="red", ls="--", lw=1, label="collapse threshold")
    if sweep["predicted_critical_ratio"]:
        ax.axvline(sweep["predicted_critical_ratio"], color="green", ls=":", label="predicted φ0²/θ0²")
    ax.set_xlabel("predictor / encoder lr ratio")
    ax.set_ylabel("|θ| at the end (discrete GD)")
    ax.set_title(f"stop-gradient from φ0={phi0}, θ0={theta0}", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def linear_run(history: dict[str, Any], title: str, path: str) -> str:
    """Eigenvalues of W_p and of F over training, their alignment, and W's singular values."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    steps = history["step"]
    axes[0].plot(steps, history["wp_eigs"])
    axes[0].set_title("eigenvalues of W_p (symmetric part)", fontsize=10)
    axes[1].semilogy(steps, np.maximum(history["f_eigs"], 1e-12))
    axes[1].set_title("eigenvalues of F = E[f fᵀ]", fontsize=10)
    axes[2].plot(steps, history["alignment"])
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].set_title("alignment of W_p with F's eigenvectors", fontsize=10)
    axes[3].semilogy(steps, np.maximum(history["w_singular"], 1e-12))
    axes[3].set_title("singular values of W", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
