"""Number formatting shared by the report sections."""
from __future__ import annotations

import math
import statistics


def mean_std(xs: list[float], fmt: str = "{:.2f}") -> str:
    """"mean ± std" over seeds (std 0 for one value); "—" when nothing was measured."""
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not xs:
        return "—"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.replace('+', '').format(sd)}"
