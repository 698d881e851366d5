"""Tests of the exact power of the one-sided Fisher test (tailscope.estimate.power)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, norm

import tailscope.estimate.power as power_module
from tailscope.errors import DataError
from tailscope.estimate.power import critical_counts, detection_power, models_needed
from tailscope.estimate.significance import fisher_pvalues


def enumerated_power(n_models, ratio, p_in, p_out, alpha):
    """Brute force: the joint binomial mass of every outcome whose p-value is <= alpha."""
    k_in = int(np.floor(ratio * n_models + 0.5))
    k_out = n_models - k_in
    x, y = np.meshgrid(np.arange(k_in + 1), np.arange(k_out + 1), indexing="ij")
    p = fisher_pvalues(x, k_in, y, k_out)
    joint = np.outer(binom.pmf(np.arange(k_in + 1), k_in, p_in), binom.pmf(y[0], k_out, p_out))
    return joint[p <= alpha].sum()


@pytest.mark.parametrize("n_models", [10, 50, 257])
@pytest.mark.parametrize(
    ("effect", "base_rate", "alpha"),
    [
        (0.0, 0.5, 0.05),
        (0.0, 0.98, 1e-4),
        (0.3, 0.5, 1e-3),
        (0.6, 0.3, 1e-6),
        (0.5, 0.6, 1e-2),  # p_in clipped to 1
        (-0.2, 0.5, 0.05),  # an effect against the alternative
    ],
)
def test_power_matches_enumeration(n_models, effect, base_rate, alpha):
    p_in = min(max(base_rate + effect, 0.0), 1.0)
    expected = enumerated_power(n_models, 0.7, p_in, base_rate, alpha)
    assert detection_power(effect, alpha, base_rate, n_models) == pytest.approx(
        expected, rel=1e-10, abs=1e-15
    )
    if effect <= 0:
        assert detection_power(effect, alpha, base_rate, n_models) <= alpha * (1 + 1e-9)


def test_power_at_scale_is_the_enumerated_size_under_the_null():
    # K = 2000 (1400 in, 600 out), alpha = 1e-8: the size, enumerated over 842k outcomes.
    x, y = np.meshgrid(np.arange(1401), np.arange(601), indexing="ij")
    rejected = fisher_pvalues(x, 1400, y, 600) <= 1e-8
    for rate in (0.1, 0.5, 0.9):
        joint = np.outer(binom.pmf(np.arange(1401), 1400, rate), binom.pmf(y[0], 600, rate))
        size = detection_power(0.0, 1e-8, rate, 2000)
        assert size == pytest.approx(joint[rejected].sum(), rel=1e-9)
        assert size <= 1e-8


def test_critical_counts_rise_by_zero_or_one_and_agree_between_both_paths(monkeypatch):
    n_models, k_in = 300, 210
    hits = np.arange(n_models + 1)
    for alpha in (0.2, 1e-3, 1e-8, 1e-20):
        table = critical_counts(n_models, k_in, hits, alpha)
        steps = np.diff(table)
        assert ((steps == 0) | (steps == 1)).all()  # the rejection region is "convex"
        monkeypatch.setattr(power_module, "_WINDOW_ALPHA", (1.0, 0.0))  # bisection only
        assert np.array_equal(critical_counts(n_models, k_in, hits, alpha), table)
        monkeypatch.undo()
        # the definition: the smallest count whose p-value is <= alpha
        k_out = n_models - k_in
        for h in range(n_models + 1):
            c, low, high = table[h], max(0, h - k_out), min(h, k_in)
            if c <= high:
                assert fisher_pvalues(c, k_in, h - c, k_out) <= alpha
            if c - 1 >= low:
                assert fisher_pvalues(c - 1, k_in, h - c + 1, k_out) > alpha


@pytest.mark.parametrize(
    ("effect", "alpha", "base_rate"),
    [
        (0.15, 1e-8, 0.5),
        (0.15, 1.7e-10, 0.8),
        (0.05, 1e-6, 0.9),
        (0.5, 1e-4, 0.02),
        (0.3, 1e-3, 0.8),
    ],
)
def test_models_needed_is_where_exact_power_crosses_the_target(effect, alpha, base_rate):
    k = models_needed(effect, alpha, base_rate, power=0.8)
    assert detection_power(effect, alpha, base_rate, k) >= 0.8
    assert detection_power(effect, alpha, base_rate, k - 1) < 0.8
    p_in = min(base_rate + effect, 1.0)
    if 0.1 <= base_rate and p_in <= 0.95:  # near the normal approximation
        variance = p_in * (1 - p_in) / 0.7 + base_rate * (1 - base_rate) / 0.3
        guess = (norm.isf(alpha) + norm.isf(0.2)) ** 2 * variance / effect**2
        assert 0.8 * guess < k < 1.25 * guess + 10


def test_models_needed_falls_with_the_effect_and_handles_twenty_thousand_models():
    needs = [models_needed(e, 1e-8, 0.5) for e in (0.05, 0.1, 0.2, 0.4)]
    assert needs == sorted(needs, reverse=True)
    assert needs[0] > 10_000  # ~16,000 models: exact power there too
    assert models_needed(0.05, 1e-8, 0.5, max_models=1000) is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: models_needed(0.0, 1e-3, 0.5), "effect must be > 0"),
        (lambda: models_needed(0.2, 1e-3, 1.0), "effect must be > 0"),
        (lambda: models_needed(0.2, 0.0, 0.5), r"alpha must be in \(0, 1\)"),
        (lambda: models_needed(0.2, 1e-3, 1.5), r"base_rate must be in \[0, 1\]"),
        (lambda: models_needed(0.2, 1e-3, 0.5, power=1.0), r"power must be in \(0, 1\)"),
        (lambda: detection_power(0.2, 1e-3, 0.5, 0), "n_models must be an integer >= 1"),
        (lambda: detection_power(0.2, 1e-3, 0.5, 10, ratio=1.0), r"ratio must be in \(0, 1\)"),
        (lambda: detection_power("big", 1e-3, 0.5, 10), "effect must be a finite number"),
    ],
)
def test_bad_arguments_raise_data_error(call, message):
    with pytest.raises(DataError, match=message):
        call()


def test_one_model_or_an_empty_group_has_no_power():
    assert detection_power(0.9, 0.5, 0.05, 1) == 0.0
    assert detection_power(0.9, 0.5, 0.05, 2, ratio=0.1) == 0.0  # k_in = 0
