"""Tests of the one-sided exact (Fisher) p-values (tailscope.estimate.significance)."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pytest
from scipy.stats import binom, hypergeom

from tailscope.errors import DataError
from tailscope.estimate.significance import (
    fisher_pvalues,
    hypergeom_tail_window,
    hypergeom_upper_tail,
)


def exact_tail(x: int, total: int, hits: int, draws: int) -> Fraction:
    """P(X >= x), X ~ Hypergeometric(total, hits, draws), in exact rational arithmetic."""
    top = min(hits, draws)
    numerator = sum(comb(hits, y) * comb(total - hits, draws - y) for y in range(x, top + 1))
    return Fraction(numerator, comb(total, draws))


def relative_error(value: float, exact: Fraction) -> float:
    return abs(float((Fraction(value) - exact) / exact))


# --- exactness ---------------------------------------------------------------------------------


def test_every_table_of_a_small_run_matches_exact_arithmetic():
    k_in, k_out = 7, 5
    hits_in, hits_out = np.meshgrid(np.arange(k_in + 1), np.arange(k_out + 1), indexing="ij")
    p = fisher_pvalues(hits_in, k_in, hits_out, k_out)
    assert p.shape == (k_in + 1, k_out + 1) and p.dtype == np.float64
    for x in range(k_in + 1):
        for y in range(k_out + 1):
            exact = exact_tail(x, k_in + k_out, x + y, k_in)
            assert relative_error(p[x, y], exact) < 1e-13, (x, y)


@pytest.mark.parametrize(
    ("total", "draws", "hits", "x"),
    [
        (2000, 1400, 1000, 740),  # ~6e-5
        (2000, 1400, 1000, 760),  # ~3e-9
        (2000, 1400, 1000, 800),  # ~7e-23
        (2000, 1400, 1000, 1000),  # ~7e-239
        (2000, 1400, 1990, 1400),  # the top count of a nearly always right test
        (4000, 2800, 2000, 1480),  # below the mean: ~1 - tiny
        (4000, 2800, 150, 130),
        (4000, 2800, 3999, 2800),
        (256, 179, 128, 110),
    ],
)
def test_deep_tails_match_exact_arithmetic(total, draws, hits, x):
    p = fisher_pvalues(x, draws, hits - x, total - draws)
    assert relative_error(float(p), exact_tail(x, total, hits, draws)) < 1e-12


def test_all_in_right_all_out_wrong_is_one_over_the_number_of_subsets():
    # The plug-in z statistic is infinite here; the exact p-value is 1 / C(K, k_in).
    for k_in, k_out in [(7, 3), (35, 15), (179, 77)]:
        p = fisher_pvalues(k_in, k_in, 0, k_out)
        assert relative_error(float(p), Fraction(1, comb(k_in + k_out, k_in))) < 1e-13


def test_agrees_with_scipy_over_the_whole_support():
    rng = np.random.default_rng(0)
    total = 1000
    k = rng.binomial(total, 0.7, 5000)
    h = rng.integers(0, total + 1, 5000)
    low, high = np.maximum(0, h + k - total), np.minimum(h, k)
    x = (low + np.floor(rng.random(5000) * (high - low + 1))).astype(np.int64)
    p = fisher_pvalues(x, k, h - x, total - k)
    expected = hypergeom.sf(x - 1, total, h, k)
    shown = expected > 1e-280
    np.testing.assert_allclose(p[shown], expected[shown], rtol=1e-12, atol=0)
    assert ((p >= 0) & (p <= 1)).all()


@pytest.mark.parametrize("total", [[300, 301], [40000], [40000, 40001]])
def test_large_inputs_share_tail_sums_between_equal_counts_and_agree(total):
    # From 10,000 estimates on, one tail is summed per distinct (hits_in, K, h, k_in).
    rng = np.random.default_rng(1)
    n = 12_000
    K = rng.choice(total, n)
    k = rng.binomial(K, 0.7)
    hits_in = rng.binomial(k, 0.9)
    hits_out = rng.binomial(K - k, 0.85)
    p = fisher_pvalues(hits_in, k, hits_out, K - k)
    one_by_one = hypergeom_upper_tail(hits_in, K, hits_in + hits_out, k)
    assert np.array_equal(p, one_by_one)


def test_pvalue_falls_as_the_in_count_grows_for_fixed_out_count():
    # The one-sided test is monotone: more hits among the in-models is more evidence.
    k_in, k_out = 35, 15
    hits_in, hits_out = np.meshgrid(np.arange(k_in + 1), np.arange(k_out + 1), indexing="ij")
    p = fisher_pvalues(hits_in, k_in, hits_out, k_out)
    assert (np.diff(p, axis=0) <= 0).all()
    assert (np.diff(p, axis=1) >= 0).all()


# --- validity by exact enumeration --------------------------------------------------------------


@pytest.fixture(scope="module")
def outcome_pvalues():
    """p-values of every outcome (hits_in, hits_out) of three run sizes."""
    tables = {}
    for k_in, k_out in [(35, 15), (179, 77), (1400, 600)]:
        x, y = np.meshgrid(np.arange(k_in + 1), np.arange(k_out + 1), indexing="ij")
        tables[k_in, k_out] = fisher_pvalues(x, k_in, y, k_out)
    return tables


@pytest.mark.parametrize("sizes", [(35, 15), (179, 77), (1400, 600)])
@pytest.mark.parametrize("rate", [0.02, 0.1, 0.5, 0.9, 0.98])
def test_size_is_at_most_alpha_down_to_1e_8(outcome_pvalues, sizes, rate):
    k_in, k_out = sizes
    p = outcome_pvalues[sizes]
    joint = np.outer(
        binom.pmf(np.arange(k_in + 1), k_in, rate), binom.pmf(np.arange(k_out + 1), k_out, rate)
    )
    for alpha in (1e-2, 1e-4, 1e-6, 1e-8):
        size = joint[p <= alpha].sum()
        assert size <= alpha * (1 + 1e-9), (alpha, size)
    if sizes == (1400, 600) and 0.1 <= rate <= 0.9:
        # ... and not vacuously: with many models the test uses most of its level.
        assert joint[p <= 1e-2].sum() > 0.5e-2


# --- the tail window used by the tables -----------------------------------------------------


@pytest.mark.parametrize(("total", "draws"), [(50, 35), (256, 179), (2000, 1400)])
def test_tail_window_agrees_with_the_tail_sums_and_repeats_bit_for_bit(total, draws):
    hits = np.arange(total + 1)
    start, tail = hypergeom_tail_window(total, draws, hits)
    again_start, again = hypergeom_tail_window(total, draws, hits)
    assert np.array_equal(start, again_start) and np.array_equal(tail, again)
    assert (np.diff(tail, axis=1) <= 0).all()
    x = start[:, None] + np.arange(tail.shape[1])[None, :]
    shown = (x <= np.minimum(hits, draws)[:, None]) & (tail > 1e-25)
    rows = np.broadcast_to(hits[:, None], x.shape)[shown]
    expected = hypergeom_upper_tail(
        x[shown], np.full(shown.sum(), total), rows, np.full(shown.sum(), draws)
    )
    np.testing.assert_allclose(tail[shown], expected, rtol=1e-12, atol=0)
    # The window starts at or below the mean: its first tail is large unless it is the min.
    x_min = np.maximum(0, hits + draws - total)
    assert (tail[start > x_min, 0] > 0.3).all()


# --- input handling -----------------------------------------------------------------------------


def test_undefined_estimates_are_nan_and_shapes_broadcast():
    p = fisher_pvalues([0, 2, 0], [0, 5, 4], [1, 1, 0], [3, 4, 0])
    assert np.isnan(p[[0, 2]]).all() and 0 < p[1] < 1
    grid = fisher_pvalues(np.arange(6)[:, None], 5, np.arange(5)[None, :], 4)
    assert grid.shape == (6, 5) and not np.isnan(grid).any()
    assert np.isnan(fisher_pvalues(0, 4, 0, 0)) and fisher_pvalues(0, 4, 0, 0).shape == ()
    # Floats holding whole numbers are counts too.
    assert fisher_pvalues(3.0, 5.0, 1.0, 4.0) == fisher_pvalues(3, 5, 1, 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((6, 5, 1, 4), "hits_in must be <= k_in"),
        ((3, 5, 5, 4), "hits_out must be <= k_out"),
        ((-1, 5, 1, 4), "hits_in must be >= 0"),
        ((3, 5, 1.5, 4), "hits_out must hold whole numbers"),
        ((3, np.nan, 1, 4), "k_in must hold finite counts"),
        ((True, 5, 1, 4), "hits_in must hold counts"),
        (([1, 2], 5, [1, 2, 3], 4), "do not broadcast"),
    ],
)
def test_bad_counts_raise_data_error_naming_the_argument(args, message):
    with pytest.raises(DataError, match=message):
        fisher_pvalues(*args)
