"""Number formatting shared by the report sections."""
from __future__ import annotations

import math
import statistics

from siamdyn.experiments.stats import t_interval


def mean_std(xs: list[float], fmt: str = "{:.2f}") -> str:
    """"mean ± std" over seeds (std 0 for one value); "—" when nothing was measured."""
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "—"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.replace('+', '').format(sd)}"


def mean_interval(xs: list[float]) -> str:
    """"+mean [low, high]": the Student-t 95 % interval over seeds; "+x (one seed)"; "—" for none."""
    if len(xs) < 2:
        return f"{xs[0]:+.1f} (one seed)" if xs else "—"
    mean, lo, hi = t_interval(xs)
    return f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"
