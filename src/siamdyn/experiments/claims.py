"""The claims the grids test, as data: the level each is about (levels.py), what it predicts
there, for which cells, and what the literature reports. Every published number was checked
against the paper's text (docs/literature_check.md says where; `checked` says how far)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Claim:
    key: str  # "H2b"
    grid: str
    text: str
    source: str  # the published result, with table/figure
    cells: tuple[str, ...]  # "grid/cell" run groups the claim reads
    level: str  # a: complete collapse | b: dimensional collapse per head | c: the representation
    # a, b: "collapsed" | "not collapsed"; ladder: "+" or "-" (trend sign); "plateau"
    predicted: str = "collapsed"
    rungs: tuple[float, ...] = field(default_factory=tuple)  # ladder / plateau: the value of each cell
    context: str = ""  # what a reader needs to compare our setting with the published one
    # checked | checked (an argument, no run) | partly checked | not a published result (docs/literature_check.md)
    checked: str = "checked"

    @property
    def ladder(self) -> bool:
        return bool(self.rungs)


CLAIMS = [
    Claim("H1", "H1", "Without stop-gradient SimSiam collapses completely (docs/seed.md §3 (a)).",
          "SimSiam fig. 2 (§4.1): std of z/‖z‖ → 0, loss → −1 ('the minimum possible loss'), 0.1 %",
          ("controls/simsiam-no-sg",), "a"),
    Claim("H1b", "H1", "Without stop-gradient and without predictor (plain Siamese, eq. 9) it collapses completely.",
          "SimSiam §4.2 'Predictor': with h = identity the gradient has the direction of D(z1, z2)'s, "
          "scaled by ½", ("controls/siamese",), "a",
          context="the paper argues this case, it reports no run of it", checked="checked (an argument, no run)"),
    Claim("H2a", "H2", "Without the predictor (stop-gradient kept) SimSiam collapses completely.",
          "SimSiam tab. 1 (a): no predictor → 0.1 %", ("H2/no-predictor",), "a",
          context="the paper reports accuracy, not which level collapses: a disagreement at level (a) can sit "
                  "beside a dimensional collapse at level (b), which the matrix gives under each verdict"),
    Claim("H2b", "H2", "A fixed random predictor fails without collapsing completely: the loss stays high.",
          "SimSiam tab. 1 (b): fixed random init → 1.5 %, 'this failure is not about collapsing. The training "
          "does not converge, and the loss remains high'; BYOL tab. 21: predictor lr × 0 at τ = 0 → 0.01 %",
          ("H2/fixed-random-predictor",), "a", "not collapsed",
          context="BYOL's λ = 0 row (a predictor that never moves, in BYOL's loss) belongs beside SimSiam's; "
                  "neither paper reads the rank, so level (b) is ours alone"),
    Claim("H2c", "H2", "A linear predictor suffices: P(dimensional collapse) < ½.",
          "Tian et al. 2021 tab. 3 (BYOL, STL-10, α_p = 1, weight decay 4e-4, one-layer W_p without bias): "
          "72.85 % without EMA, 74.51 % with; a symmetric W_p without EMA 36.62 %", ("H2/linear-predictor",), "b",
          "not collapsed",
          context="this cell: SimSiam's loss, α_p = 1, no EMA; its outcome is bimodal across seeds, so it is read "
                  "as P(collapse); under SGD at w4 its runs are Q3's (the same configuration, 20 seeds)"),
    Claim("H2d", "H2", "A linear predictor trained 10× faster than the encoder (α_p = 10) does not collapse.",
          "Tian et al. 2021 §3.2 obs. 1 ('larger α_p leads to a smaller basin of attraction of the collapsed "
          "branch') and fig. 6 ('if α_p > 1, symmetric W_p with no EMA can also work')",
          ("H2/linear-predictor-lr-x10",), "b", "not collapsed",
          context="fig. 6's plotted values not checked, only its caption; under AdamW the predictor's decoupled "
                  "weight decay scales with its lr too", checked="partly checked"),
    Claim("H3a", "H3", "BYOL with τ = 0 and the predictor at the encoder's lr (λ = 1) collapses.",
          "BYOL tab. 5a: τ_base = 0 ('stop gradient of online', constant τ) → 0.3 %; tab. 21: τ = 0, λ = 1 → 5.5 %",
          ("H3/byol-tau0.0-pred-lr-x1",), "b",
          context="BYOL's tab. 22 reports 3.2 ± 2.9 % for the same setting in another set of runs"),
    Claim("H3d", "H3", "BYOL with τ = 0 and the predictor at 10× the lr (λ = 10, our recipe's) does not collapse.",
          "BYOL tab. 21 (app. I.1): τ = 0, λ = 10 → 66.6 %; λ = 2 → 62.8 %, λ = 20 → 66.3 %",
          ("H3/byol-tau0.0",), "b", "not collapsed",
          context="v2 compared this cell with tab. 5a's τ = 0 row (λ = 1) and called it a disagreement"),
    Claim("H3b", "H3", "A fixed random target (τ = 1) is poor but does not collapse completely.",
          "BYOL tab. 5a: τ_base = 1 ('constant random network') → 18.8 ± 0.7 %", ("H3/byol-tau1.0",), "a",
          "not collapsed"),
    Claim("H3c", "H3", "A plateau: RankMe (z and p, each) does not change by more than ×1.25 between τ = 0.9 and "
          "τ = 0.996.",
          "BYOL tab. 5a: 68.4 / 72.5 / 69.8 % for τ_base = 0.9 / 0.99 / 0.999 (cosine ramp of τ to 1), failure at "
          "the ends (0.3 % at 0, 18.8 % at 1)", ("H3/byol-tau0.9", "H3/byol-tau0.996"), "b", "plateau",
          rungs=(0.9, 0.996),
          context="our ladder fixes τ (1/(1 − τ) = 250 steps at 0.996, 42 % of the run; at a fixed 0.999 the "
                  "target would trail by 1 000 steps, more than the run, so the top rung is BYOL's default 0.996) "
                  "and trains the predictor at λ = 10 (BYOL: 1); the ends are H3a (τ = 0) and H3b (τ = 1); the "
                  "cosine-ramped arm `byol-tau0.99-cosine` is tabulated beside it; that BYOL's 0.9–0.999 rows "
                  "ramp τ is inferred from the table's footnote", checked="partly checked"),
    Claim("H4a", "H4", "A slower predictor protects less: RankMe(p) rises with the predictor's lr multiplier.",
          "docs/seed.md §3 (c); BYOL tab. 21 (τ = 0: λ = 0 → 0.01 %, 1 → 5.5 %, 2 → 62.8 %, 10 → 66.6 %); "
          "Tian et al. 2021 obs. 1",
          ("H4/pred-lr-x0.01", "H4/pred-lr-x0.1", "controls/simsiam", "H4/pred-lr-x10.0"), "b", "+",
          rungs=(0.01, 0.1, 1.0, 10.0)),
    Claim("H4b", "H4", "A predictor whose lr decays with the rest still trains without collapse.",
          "SimSiam tab. 1: baseline (predictor lr with cosine decay) 67.7 %; (c) lr not decayed 68.1 %",
          ("H4/pred-lr-decayed",), "b", "not collapsed"),
    Claim("H5", "H5", "Term 2 alone (gradient through the target branch only) collapses completely.",
          "docs/seed.md §3 (a); the toy model of §4 (term 2 only → θ → 0)", ("H5/term2-only",), "a",
          checked="not a published result"),
    Claim("H6", "H6", "Eq. (10) — target f(x̄), no stop-gradient, no predictor — does not collapse.",
          "docs/seed.md §6 (an open question there; no published result)",
          ("H6/xbar-K2", "H6/xbar-K4", "H6/xbar-K8"), "b", "not collapsed", checked="not a published result"),
]
# Pairs of cells that share seeds (same seed = same initial weights and data order), compared seed
# by seed with the sign test on their level-(b) positions: (claim, "changed cell", "base cell").
PAIRED = [("H2d vs H2c: α_p = 10 against 1", "H2/linear-predictor-lr-x10", "H2/linear-predictor"),
          ("H3d vs H3a: λ = 10 against 1 at τ = 0", "H3/byol-tau0.0", "H3/byol-tau0.0-pred-lr-x1"),
          ("H4b: predictor lr decayed against fixed", "H4/pred-lr-decayed", "controls/simsiam")]
