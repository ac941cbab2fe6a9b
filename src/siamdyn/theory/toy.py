"""The scalar toy model of docs/seed.md §4: l(φ, θ) = (φθ − θ)², h_φ(f) = φ·f, f_θ = θ.

    dφ/dt = −r · 2θ²(φ − 1)                        (the predictor; r = predictor/encoder lr ratio)
    dθ/dt = −2φθ(φ − 1)                            stop-gradient (term 1 only)
    dθ/dt = −2θ(φ − 1)²                            full gradient (terms 1 + 2)
    dθ/dt = +2θ(φ − 1)                             term 2 only

With stop-gradient, φ² − r·θ² is conserved (d/dt = −4rφθ²(φ−1) + 4rφθ²(φ−1) = 0). Hence
from φ0 > 0 the flow never collapses, and from φ0 < 0 it collapses (θ → 0, φ → −√C)
exactly when C = φ0² − r·θ0² > 0, i.e. when the predictor ratio r < φ0²/θ0²: the
predictor must be fast enough to cross zero before the encoder decays (docs/seed.md §3).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.integrate import solve_ivp

VARIANTS = ("stop_gradient", "full_gradient", "term2_only")
COLLAPSE_THETA = 0.01  # |θ(T)| below this counts as collapsed


def velocity(phi: np.ndarray, theta: np.ndarray, variant: str, ratio: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(dφ/dt, dθ/dt) of the gradient flow; the residual φθ − θ = θ(φ − 1)."""
    residual = theta * (phi - 1)
    dphi = -ratio * 2 * theta * residual  # −∂l/∂φ, the same in every variant
    term1 = -2 * phi * residual  # through the predictor branch
    term2 = 2 * residual  # through the target branch
    if variant == "stop_gradient":
        return dphi, term1
    if variant == "full_gradient":
        return dphi, term1 + term2
    if variant == "term2_only":
        return dphi, term2
    raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")


def integrate(variant: str, phi0: float | np.ndarray, theta0: float | np.ndarray, t_end: float = 20.0,
              ratio: float | np.ndarray = 1.0, n_points: int = 401) -> dict[str, np.ndarray]:
    """Gradient flow with scipy's solve_ivp (RK45, rtol 1e-9). Vectorised: arrays of starts
    are integrated as one system. Returns t, phi (starts × time), theta."""
    phi0, theta0 = np.atleast_1d(np.asarray(phi0, float)), np.atleast_1d(np.asarray(theta0, float))
    n = len(phi0)

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        dphi, dtheta = velocity(y[:n], y[n:], variant, ratio)
        return np.concatenate([dphi, dtheta])

    t_eval = np.linspace(0, t_end, n_points)
    sol = solve_ivp(rhs, (0, t_end), np.concatenate([phi0, theta0]), t_eval=t_eval, rtol=1e-9, atol=1e-12)
    return {"t": sol.t, "phi": sol.y[:n], "theta": sol.y[n:]}


def gradient_descent(variant: str, phi0: float, theta0: float, lr: float = 0.05, ratio: float = 1.0,
                     steps: int = 400) -> dict[str, np.ndarray]:
    """Discrete GD: φ ← φ + lr·ratio·(−∂l/∂φ), θ ← θ + lr·(chosen terms)."""
    phi, theta = np.empty(steps + 1), np.empty(steps + 1)
    phi[0], theta[0] = phi0, theta0
    for k in range(steps):
        dphi, dtheta = velocity(phi[k], theta[k], variant, ratio)
        phi[k + 1], theta[k + 1] = phi[k] + lr * dphi, theta[k] + lr * dtheta
    return {"step": np.arange(steps + 1), "phi": phi, "theta": theta}


def collapsed(theta_final: np.ndarray | float) -> np.ndarray | bool:
    return np.abs(theta_final) < COLLAPSE_THETA


def summary(phi0: float = 0.6, theta0: float = 0.1, t_end: float = 20.0, ratio: float = 1.0) -> dict[str, Any]:
    """Final φ, θ and the verdict per variant, plus the stop-gradient invariant checked."""
    out: dict[str, Any] = {"phi0": phi0, "theta0": theta0, "t_end": t_end, "lr_ratio": ratio, "variants": {}}
    for v in VARIANTS:
        sol = integrate(v, phi0, theta0, t_end, ratio)
        phi, theta = sol["phi"][0], sol["theta"][0]
        out["variants"][v] = {"phi": float(phi[-1]), "theta": float(theta[-1]),
                              "collapsed": bool(collapsed(theta[-1]))}
        if v == "stop_gradient":
            invariant = phi ** 2 - ratio * theta ** 2
            out["conserved_quantity"] = {"formula": "phi^2 - r*theta^2", "initial": float(invariant[0]),
                                         "final": float(invariant[-1]),
                                         "max_abs_drift": float(np.abs(invariant - invariant[0]).max())}
    return out


def basin(variant: str, ratio: float = 1.0, grid: int = 41, extent: float = 1.5,
          t_end: float = 20.0) -> dict[str, np.ndarray]:
    """Collapse (|θ(T)| < 0.01) for a grid of starts φ0, θ0 ∈ [−extent, extent] (θ0 ≠ 0)."""
    phis = np.linspace(-extent, extent, grid)
    thetas = np.linspace(-extent, extent, grid + 1)  # an even count skips θ0 = 0, a fixed point
    P, T = np.meshgrid(phis, thetas, indexing="xy")
    sol = integrate(variant, P.ravel(), T.ravel(), t_end, ratio, n_points=2)
    mask = collapsed(sol["theta"][:, -1]).reshape(P.shape)
    return {"phi0": phis, "theta0": thetas, "collapsed": mask, "fraction": float(mask.mean())}


def critical_ratio(phi0: float, theta0: float) -> float:
    """The exact lr ratio below which stop-gradient collapses from (φ0, θ0), from the
    invariant: φ0²/θ0² when φ0 < 0, and 0 (never collapses) when φ0 ≥ 0."""
    return phi0 ** 2 / theta0 ** 2 if phi0 < 0 else 0.0


def ratio_sweep(ratios: np.ndarray, phi0: float, theta0: float, lr: float = 0.01,
                t_end: float = 20.0) -> dict[str, Any]:
    """Discrete-GD stop-gradient from one start at each predictor/encoder lr ratio; returns
    the collapse verdict per ratio and the smallest ratio that does not collapse."""
    steps = int(round(t_end / lr))
    finals = [gradient_descent("stop_gradient", phi0, theta0, lr, r, steps)["theta"][-1] for r in ratios]
    verdicts = [bool(collapsed(f)) for f in finals]
    safe = [r for r, c in zip(ratios, verdicts) if not c]
    return {"ratios": [float(r) for r in ratios], "theta_final": [float(f) for f in finals], "collapsed": verdicts,
            "measured_critical_ratio": float(min(safe)) if safe and verdicts[0] else None,
            "predicted_critical_ratio": critical_ratio(phi0, theta0)}


def initial_speed_ratio(phi0: float, theta0: float, ratio: float = 1.0) -> float:
    """|dφ/dt| / |dθ/dt| at the start under stop-gradient = r·|θ0|/|φ0| (> 1: the predictor
    moves faster). From the seed's start (0.6, 0.1) at r = 1 it is 1/6: the encoder is 6×
    faster, yet the flow never collapses (φ0 > 0 lies in the no-collapse basin)."""
    return ratio * abs(theta0) / max(abs(phi0), 1e-12)


def speed_vs_basin(n: int = 400, seed: int = 0, t_end: float = 40.0) -> dict[str, Any]:
    """Separate the fast/slow argument from the basin: random starts with φ0 < 0 and random
    lr ratios r; each run is classified by its initial speed (predictor faster or not) and by
    its basin (r > φ0²/θ0², from the invariant), then integrated. The table counts collapses
    per class: if speed were the cause, 'predictor faster' runs would not collapse."""
    rng = np.random.default_rng(seed)
    phi0 = -rng.uniform(0.05, 1.5, n)
    theta0 = rng.uniform(0.05, 1.5, n) * rng.choice([-1, 1], n)
    ratios = np.exp(rng.uniform(np.log(0.05), np.log(50), n))
    # One vectorised system: the velocity broadcasts a ratio per start.
    outcome = collapsed(integrate("stop_gradient", phi0, theta0, t_end, ratios, n_points=2)["theta"][:, -1])
    faster = ratios * np.abs(theta0) > np.abs(phi0)
    in_safe_basin = ratios > phi0 ** 2 / theta0 ** 2
    table = {f"{'predictor faster' if f else 'predictor slower'}, {'safe basin' if b else 'collapse basin'}":
             {"runs": int(((faster == f) & (in_safe_basin == b)).sum()),
              "collapsed": int((outcome & (faster == f) & (in_safe_basin == b)).sum())}
             for f in (True, False) for b in (True, False)}
    return {"runs": n, "table": table,
            "basin_predicts": float((outcome == ~in_safe_basin).mean()),
            "speed_predicts": float((outcome == ~faster).mean()),
            "seed_start_speed_ratio": initial_speed_ratio(0.6, 0.1)}
