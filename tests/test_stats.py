"""affssl.stats: Holm–Bonferroni against a hand computation, the Welch interval against scipy."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from affssl import stats


def test_holm_matches_a_hand_computation():
    # p sorted: 0.01 (×4 = 0.04), 0.02 (×3 = 0.06), 0.03 (×2 = 0.06), 0.04 (×1 = 0.04 → running max 0.06)
    assert stats.holm([0.04, 0.01, 0.03, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.003]) == [0.003]  # a family of one is unadjusted


def test_holm_skips_nan_and_never_lowers_a_p_value():
    out = stats.holm([0.02, math.nan, 0.01])
    assert out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02) and math.isnan(out[1])
    ps = [0.001, 0.2, 0.04, 0.03, 0.5]
    adj = stats.holm(ps)
    assert all(a >= p for a, p in zip(adj, ps, strict=True))
    order = sorted(range(len(ps)), key=ps.__getitem__)
    assert [adj[i] for i in order] == sorted(adj)  # monotone in the order of the raw p-values


def test_welch_interval_matches_scipy():
    a, b = [71.2, 70.4, 72.9, 71.8], [69.0, 70.1, 68.2]
    ref = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    c = stats.compare(a, b)
    assert c.gain - c.ci95 == pytest.approx(ref.low, rel=1e-9)
    assert c.gain + c.ci95 == pytest.approx(ref.high, rel=1e-9)
    assert math.isnan(stats.welch_ci([1.0], [2.0, 3.0])) and math.isnan(stats.welch_ci([1.0, 1.0], [2.0, 2.0]))
