"""Declared valid ranges for every number the user can give: one notation, one check, one message.

A range is written as in mathematics, `"[0, 1)"` or `"(0, 1e3]"` (`2^40` is allowed as a
bound), next to the help text of the config field (config.py's `knob(..., bounds=...)`) or
of the command-line flag (`bounded(int, "[1, 1024]", "--nproc")`). Every bound is finite,
so the same check refuses NaN, ±inf and the 1e300 that would overflow an int or allocate
terabytes.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable

from siamdyn.errors import ConfigError


def _number(token: str) -> int | float:
    """`"1e3"` → 1000.0, `"-2^40"` → -1099511627776 (an int: seeds compare exactly), `"7"` → 7."""
    t = token.strip()
    sign = -1 if t.startswith("-") else 1
    t = t.lstrip("+-")
    if "^" in t:
        base, exp = t.split("^")
        return sign * int(base) ** int(exp)
    return sign * (int(t) if t.isdigit() else float(t))


@dataclass(frozen=True)
class Bounds:
    """An interval with open or closed ends; `value in bounds` is False for NaN and non-numbers."""
    text: str
    lo: int | float
    hi: int | float
    lo_open: bool
    hi_open: bool

    @classmethod
    def parse(cls, text: str) -> "Bounds":
        ends, inner = text[0] + text[-1], text[1:-1].split(",")
        if ends[0] not in "[(" or ends[1] not in "])" or len(inner) != 2:
            raise ValueError(f"bounds {text!r} must look like '[lo, hi]', '(lo, hi]', '[lo, hi)' or '(lo, hi)'")
        lo, hi = _number(inner[0]), _number(inner[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds {text!r} need finite lo < hi")
        return cls(text, lo, hi, ends[0] == "(", ends[1] == ")")

    def __contains__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are Real too
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below  # both False for NaN


def show(value: Any, width: int = 40) -> str:
    """`repr(value)`, shortened: int(1e300) must not become a 300-digit error line."""
    text = repr(value)
    if isinstance(value, int) and len(text) > 20:
        try:
            return f"{value:.4g}"  # 1e+300
        except OverflowError:
            pass
    return text if len(text) <= width else f"{text[:width // 2]}…({len(text)} characters)"


def out_of_bounds(name: str, value: Any, bounds: Bounds, why: str = "") -> str | None:
    """The one-line complaint about `name=value`, or None when the value is in range."""
    if value in bounds:
        return None
    nonfinite = isinstance(value, float) and not math.isfinite(value)
    what = "must be a finite number in" if nonfinite else "must be in"
    return f"{name}={show(value)} {what} {bounds.text}" + (f" ({why})" if why else "")


def check_bounds(name: str, value: Any, bounds: Bounds, why: str = "") -> None:
    message = out_of_bounds(name, value, bounds, why)
    if message:
        raise ConfigError(message)


def _integral(raw: str) -> int | None:
    """`"1e3"` → 1000, as `--set` reads ints; None for `"2.5"`, `"inf"` or `"x"`."""
    try:
        number = float(raw)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def bounded(kind: type, text: str, flag: str) -> Callable[[str], int | float]:
    """An argparse `type=` for `flag` that parses `kind` and refuses values outside `text`
    with a ConfigError. argparse turns only ValueError/TypeError into its usage message, so the
    ConfigError reaches `cli.main`, which prints it on one line and exits 2."""
    bounds = Bounds.parse(text)
    noun = "an integer" if kind is int else "a number"

    def convert(raw: str) -> int | float:
        try:
            value = kind(raw)
        except ValueError:
            value = _integral(raw) if kind is int else None
        if value is None:
            raise ConfigError(f"{flag} {show(raw)} is not {noun}; pass {noun} in {text}")
        if value not in bounds:
            raise ConfigError(f"{flag} {show(value)} is out of range; pass {noun} in {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its own messages
    return convert
