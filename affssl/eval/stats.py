"""Summaries of repeated trials: mean and the half-width of a two-sided Student-t confidence interval.

The paper reports linear-probe accuracy as the mean of 5 trials ± the 95 % t-interval half-width
(paper.md §2.4, `scripts/show_*_results.py --ci`): t_{(1+c)/2, n−1} · s / √n with s the sample
standard deviation (ddof = 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """(mean, half-width); the half-width is None for fewer than two values."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
