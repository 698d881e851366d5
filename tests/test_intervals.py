"""Tests of the confidence intervals on p_in - p_out (tailscope.estimate.intervals).

Coverage is computed exactly: for K models (k_in = round(0.7 K) in, the rest out), the
interval of every outcome (hits_in, hits_out) is computed once; the coverage at true rates
(p_in, p_out) is the joint binomial probability of the outcomes whose interval contains
p_in - p_out.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, norm

from tailscope.errors import DataError
from tailscope.estimate.intervals import difference_interval

GRID = (0.005, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 0.995)
MODELS = (50, 100, 256, 500, 1000)


def strata() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(differences, extremes): rate pairs with p_in - p_out in {0, +-0.1, +-0.3, +-0.6}
    from every grid rate (the issue's strata), and every other pair of grid rates (up to
    0.995 vs 0.005)."""
    differences = set()
    for base in GRID:
        for step in (0.0, 0.1, 0.3, 0.6, -0.1, -0.3, -0.6):
            other = round(base + step, 4)
            if 0 < other < 1:
                differences |= {(other, base), (base, other)}
    extremes = {(a, b) for a in GRID for b in GRID} - differences
    return sorted(differences), sorted(extremes)


def coverage(method: str, n_models: int, pairs: list[tuple[float, float]]) -> np.ndarray:
    k_in = round(0.7 * n_models)
    k_out = n_models - k_in
    x, y = np.meshgrid(np.arange(k_in + 1), np.arange(k_out + 1), indexing="ij")
    low, high = difference_interval(x, k_in, y, k_out, method=method)
    result = []
    for p_in, p_out in pairs:
        delta = p_in - p_out
        covers = (low <= delta + 1e-12) & (delta - 1e-12 <= high)
        joint = np.outer(binom.pmf(np.arange(k_in + 1), k_in, p_in), binom.pmf(y[0], k_out, p_out))
        result.append(joint[covers].sum())
    return np.array(result)


@pytest.fixture(scope="module")
def coverages():
    differences, extremes = strata()
    table = {}
    for method in ("agresti-caffo", "newcombe", "wald"):
        for n_models in MODELS:
            table[method, n_models] = (
                coverage(method, n_models, differences),
                coverage(method, n_models, extremes),
            )
    return table


@pytest.mark.parametrize("n_models", MODELS)
def test_default_interval_covers_at_least_93_percent_in_every_stratum(coverages, n_models):
    differences, extremes = coverages["agresti-caffo", n_models]
    assert differences.min() >= 0.93
    # every pair of grid rates, 0.995 vs 0.005 included: only K = 50 dips, to 92.3%
    assert extremes.min() >= (0.92 if n_models == 50 else 0.93)
    both = np.concatenate([differences, extremes])
    assert 0.93 <= both.mean() <= 0.97


@pytest.mark.parametrize("n_models", MODELS)
def test_newcombe_covers_the_differences_but_not_the_extremes(coverages, n_models):
    differences, extremes = coverages["newcombe", n_models]
    assert differences.min() >= 0.93
    assert 0.93 <= differences.mean() <= 0.97
    if n_models in (50, 256):
        assert extremes.min() < 0.92  # 0.995 vs 0.005, where memorization is largest


@pytest.mark.parametrize("n_models", MODELS)
def test_wald_interval_undercovers(coverages, n_models):
    differences, extremes = coverages["wald", n_models]
    assert min(differences.min(), extremes.min()) < 0.9


# --- known answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [  # Newcombe (1998), Statistics in Medicine 17, Table II, method 10
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ],
)
def test_newcombe_matches_the_published_examples(counts, expected):
    low, high = difference_interval(*counts, method="newcombe")
    np.testing.assert_allclose([low, high], expected, atol=5e-5)


def test_agresti_caffo_is_wald_on_one_added_success_and_failure():
    z = norm.isf(0.05)
    x, n1, y, n2 = 17, 40, 3, 25
    a, b = (x + 1) / (n1 + 2), (y + 1) / (n2 + 2)
    half = z * np.sqrt(a * (1 - a) / (n1 + 2) + b * (1 - b) / (n2 + 2))
    low, high = difference_interval(x, n1, y, n2, confidence=0.9)
    np.testing.assert_allclose([low, high], [a - b - half, a - b + half], rtol=1e-14)
    wald_low, wald_high = difference_interval(x, n1, y, n2, confidence=0.9, method="wald")
    a, b = x / n1, y / n2
    half = z * np.sqrt(a * (1 - a) / n1 + b * (1 - b) / n2)
    np.testing.assert_allclose([wald_low, wald_high], [a - b - half, a - b + half], rtol=1e-14)


def test_intervals_are_nested_in_confidence_and_clipped_to_minus_one_one():
    x, y = np.meshgrid(np.arange(36), np.arange(16), indexing="ij")
    narrow = difference_interval(x, 35, y, 15, confidence=0.8)
    wide = difference_interval(x, 35, y, 15, confidence=0.99)
    assert (wide[0] <= narrow[0]).all() and (narrow[1] <= wide[1]).all()
    assert (wide[0] >= -1).all() and (wide[1] <= 1).all()
    # Newcombe's interval always holds the estimate (Agresti-Caffo's, centred on the
    # shrunken estimate, need not at 35/35 vs 0/15).
    low, high = difference_interval(x, 35, y, 15, method="newcombe")
    estimate = x / 35 - y / 15
    assert ((low <= estimate + 1e-12) & (estimate <= high + 1e-12)).all()


def test_undefined_estimates_are_nan():
    low, high = difference_interval([1, 0, 3], [2, 0, 3], [1, 2, 0], [4, 4, 0])
    assert np.isnan(low[[1, 2]]).all() and np.isnan(high[[1, 2]]).all()
    assert np.isfinite([low[0], high[0]]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 1.0}, r"confidence must be a finite number in \(0, 1\)"),
        ({"confidence": "high"}, "confidence must be a finite number"),
        ({"method": "exact"}, "method must be one of"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs, message):
    with pytest.raises(DataError, match=message):
        difference_interval(3, 5, 1, 4, **kwargs)
