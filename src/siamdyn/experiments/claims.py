"""The claims the grids test, as data: what is predicted, for which cells, against which
reference, and what the literature reports (checked against the papers' text)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Claim:
    key: str  # "H2b"
    grid: str
    text: str
    source: str  # the published result, with table/figure
    cells: tuple[str, ...]  # "grid/cell" run groups the claim reads
    predicted: str = "collapsed"  # binary: collapsed | healthy; ladder: "+" or "-" (trend sign)
    reference: str = "controls/simsiam"  # the healthy run group rank ratios are taken against
    rungs: tuple[float, ...] = field(default_factory=tuple)  # ladder: the value of each cell
    context: str = ""  # what a reader needs to compare our setting with the published one

    @property
    def ladder(self) -> bool:
        return bool(self.rungs)


BYOL_REF = "H3/byol-tau0.99-cosine"
CLAIMS = [
    Claim("H1", "H1", "Without stop-gradient SimSiam collapses (docs/seed.md §3 (a)).",
          "SimSiam fig. 2: std of z/‖z‖ → 0, loss → −1, linear accuracy 0.1 %", ("controls/simsiam-no-sg",)),
    Claim("H1b", "H1", "Without stop-gradient and without predictor (plain Siamese, eq. 9) it collapses.",
          "SimSiam §4.2: with h = identity the loss gradient is the no-stop-gradient one scaled by ½",
          ("controls/siamese",)),
    Claim("H2a", "H2", "Without the predictor (stop-gradient kept) SimSiam collapses.",
          "SimSiam tab. 1 (a): no predictor → 0.1 %, collapse", ("H2/no-predictor",)),
    Claim("H2b", "H2", "A fixed random predictor fails without collapsing (the loss stays high).",
          "SimSiam tab. 1 (b): fixed random init → 1.5 %, 'does not converge, the loss remains high'",
          ("H2/fixed-random-predictor",), "healthy",
          context="SimSiam reads collapse as the output std; we read rank: compare the final loss and p std·√d "
                  "columns of the H2 table with the control's"),
    Claim("H2c", "H2", "A linear predictor suffices.",
          "Tian et al. 2021 tab. 3 (BYOL loss, STL-10, α_p = 1, weight decay 4e-4): a linear predictor reaches "
          "72.9 % without an EMA target, 74.5 % with one; only a symmetrised W_p fails without one (36.6 %)",
          ("H2/linear-predictor",), "healthy",
          context="this cell: SimSiam's loss, α_p = 1, no EMA, AdamW weight decay 1e-4; Tian et al. obs. 1 "
                  "(a larger relative predictor lr shrinks the collapse basin) is tested by H2d"),
    Claim("H2d", "H2", "A linear predictor trained 10× faster than the encoder (α_p = 10) suffices.",
          "Tian et al. 2021 obs. 1 (a larger α_p shrinks the collapse basin) and fig. 6 (with α_p > 1 even a "
          "symmetric W_p trains without an EMA target)",
          ("H2/linear-predictor-lr-x10",), "healthy",
          context="the H2c cell with the predictor's lr ×10 (fixed, as SimSiam's), no EMA; AdamW's decoupled "
                  "weight decay scales with the lr, so the predictor's decay is ×10 too (Tian's α_p leaves η alone)"),
    Claim("H3a", "H3", "An EMA target with τ = 0 (SimSiam's target in BYOL's loss and heads) collapses.",
          "BYOL tab. 5a: τ = 0 → 0.3 %", ("H3/byol-tau0.0",), reference=BYOL_REF,
          context="our BYOL recipe trains the predictor at 10× the lr; BYOL's own tab. 21 reports 66.6 % at "
                  "τ = 0 with a 10× predictor lr (5.5 % at 1×)"),
    Claim("H3b", "H3", "A fixed random target (τ = 1) is poor but does not collapse.",
          "BYOL tab. 5a: τ = 1 → 18.8 %, stable", ("H3/byol-tau1.0",), "healthy", BYOL_REF),
    Claim("H3c", "H3", "Slower targets protect more: RankMe rises with τ from 0 to 0.996.",
          "BYOL tab. 5a: 0.3 / 68.4 / 72.5 / 69.8 % for τ = 0 / 0.9 / 0.99 / 0.999",
          ("H3/byol-tau0.0", "H3/byol-tau0.9", "H3/byol-tau0.99", "H3/byol-tau0.996"), "+", BYOL_REF,
          (0.0, 0.9, 0.99, 0.996)),
    Claim("H4a", "H4", "A slower predictor protects less: RankMe rises with the predictor's lr multiplier.",
          "docs/seed.md §3 (c); BYOL tab. 21–22 (predictor lr × λ at τ = 0: λ = 1 → 5.5 %, λ ≥ 2 → 62–67 %); "
          "Tian et al. 2021 obs. 1 (a larger relative predictor lr shrinks the collapse basin)",
          ("H4/pred-lr-x0.01", "H4/pred-lr-x0.1", "controls/simsiam", "H4/pred-lr-x10.0"), "+",
          rungs=(0.01, 0.1, 1.0, 10.0)),
    Claim("H4b", "H4", "A predictor whose lr decays with the rest still trains without collapse.",
          "SimSiam tab. 1: predictor lr decayed 67.7 %, not decayed 68.1 %", ("H4/pred-lr-decayed",), "healthy"),
    Claim("H5", "H5", "Term 2 alone (gradient through the target branch only) collapses.",
          "docs/seed.md §3 (a); the toy model of §4 (term 2 only → θ → 0)", ("H5/term2-only",)),
    Claim("H6", "H6", "Eq. (10) — target f(x̄), no stop-gradient, no predictor — trains without collapse.",
          "docs/seed.md §6 (an open question there; no published result)",
          ("H6/xbar-K2", "H6/xbar-K4", "H6/xbar-K8"), "healthy"),
]
