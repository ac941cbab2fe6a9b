"""Predictor spectrum for a linear predictor p = W_p z (DirectPred, Tian et al. 2021).

DirectPred's analysis: during training the symmetric part of W_p comes to share its
eigenvectors with F = E[z zᵀ], the correlation matrix of the predictor's input, and its
eigenvalues follow F's (p_j ∝ √λ_j). We log the top eigenvalues of both, how much of W_p
is asymmetric, and how well F's top eigenvectors are eigenvectors of W_p.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def predictor_spectrum(weight: torch.Tensor, z: torch.Tensor, top: int = 8) -> dict[str, object]:
    """Eigenvalues (largest first) of sym(W_p) and of F = zᵀz/N, asymmetry ‖W − Wᵀ‖/‖W + Wᵀ‖,
    and alignment = mean over F's `top` eigenvectors u of |cos(u, sym(W_p) u)| (1 = shared)."""
    w = weight.detach().float()
    w_sym = (w + w.T) / 2
    eig_w = torch.linalg.eigvalsh(w_sym).flip(0)
    z = z.detach().float()
    eig_f, vec_f = torch.linalg.eigh(z.T @ z / len(z))
    eig_f, vec_f = eig_f.flip(0), vec_f.flip(1)
    k = min(top, len(eig_f))
    u = vec_f[:, :k]
    wu = w_sym @ u
    cos = (u * wu).sum(0).abs() / wu.norm(dim=0).clamp(min=1e-12)
    return {"pred_eigs": eig_w[:k].tolist(), "z_corr_eigs": eig_f[:k].tolist(),
            "pred_asymmetry": float((w - w.T).norm() / (w + w.T).norm().clamp(min=1e-12)),
            "pred_eig_alignment": float(cos.mean())}
