"""Statistics of repeated results: mean ± 95 % t-interval, Welch's t-test, relative gain (paper §2.4),
the Welch interval of a difference of means, and Holm–Bonferroni adjustment of a family of p-values.

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


def welch_ci(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """Half-width of the Welch interval of mean(a) − mean(b): t_{(1+c)/2, ν} · √(s_a²/n_a + s_b²/n_b).

    ν is the Welch–Satterthwaite degrees of freedom. NaN under the same conditions as `welch_p`.
    """
    if len(a) < 2 or len(b) < 2 or (std(a) == 0 and std(b) == 0):
        return NAN
    va, vb = std(a) ** 2 / len(a), std(b) ** 2 / len(b)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(stats.t.ppf((1 + confidence) / 2, dof)) * math.sqrt(va + vb)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order; NaN entries stay NaN and are not counted.

    With the m valid p-values sorted ascending p_(1) ≤ … ≤ p_(m): adj_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)).
    Rejecting where adj ≤ α controls the family-wise error rate at α.
    """
    valid = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    out = [NAN] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(valid):
        running = max(running, min(1.0, (len(valid) - rank) * p))
        out[i] = running
    return out


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
    ci95: float = NAN  # half-width of the Welch 95 % interval of `gain`


def compare(values: Sequence[float], reference: Sequence[float]) -> Comparison:
    m, r = mean(values), mean(reference)
    return Comparison(m - r, relative_gain(m, r), welch_p(values, reference), welch_ci(values, reference))


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
