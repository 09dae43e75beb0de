"""Statistics of repeated results: mean ± 95 % t-interval, Welch's t-test, relative gain (paper §2.4).

Pure functions of lists of numbers. A quantity that cannot be computed from the samples is NaN,
never a made-up number: the interval of one sample, a test with fewer than two samples on a side,
a test between two samples without any spread, a gain relative to zero. `fmt` prints NaN as "—".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95
NAN = float("nan")


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else NAN


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof = 1); NaN for fewer than two values."""
    n = len(values)
    if n < 2:
        return NAN
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))


def ci_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the two-sided Student-t interval t_{(1+c)/2, n−1} · s / √n; NaN for n < 2."""
    n = len(values)
    if n < 2:
        return NAN
    return float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std(values) / math.sqrt(n)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances): scipy.stats.ttest_ind(equal_var=False).

    NaN when a side has fewer than two values or neither side varies (the statistic is 0/0 or ±∞,
    which says nothing about noise); one side without spread is fine.
    """
    if len(a) < 2 or len(b) < 2 or (std(a) == 0 and std(b) == 0):
        return NAN
    with warnings.catch_warnings():  # near-identical samples warn about precision; the value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)


def relative_gain(value: float, reference: float) -> float:
    """(value − reference) / reference; NaN when the reference is 0 or NaN."""
    if reference == 0 or math.isnan(reference):
        return NAN
    return (value - reference) / reference


@dataclass(frozen=True)
class Summary:
    """One variant's samples summarised."""

    n: int
    mean: float
    ci95: float  # half-width; NaN for n < 2
    std: float


def summarize(values: Sequence[float]) -> Summary:
    return Summary(len(values), mean(values), ci_half_width(values), std(values))


@dataclass(frozen=True)
class Comparison:
    """A variant against a reference variant."""

    gain: float  # difference of means, in the metric's unit
    relative: float  # gain / reference mean
    p: float  # Welch two-sided


def compare(values: Sequence[float], reference: Sequence[float]) -> Comparison:
    m, r = mean(values), mean(reference)
    return Comparison(m - r, relative_gain(m, r), welch_p(values, reference))


def fmt(x: float | None, digits: int = 2, signed: bool = False) -> str:
    """A number for a table; NaN and None print as an em dash."""
    if x is None or math.isnan(x):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    """p-values: two significant digits, scientific below 0.001; '—' for NaN."""
    if math.isnan(p):
        return "—"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float | None]:
    """(mean, half-width) of repeated trials; the half-width is None for fewer than two values."""
    if not values:
        raise ValueError("t_interval needs at least one value")
    half = ci_half_width(values, confidence)
    return mean(values), None if math.isnan(half) else half
