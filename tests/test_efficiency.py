"""Tests of the alternative memorization estimators (tailscope.estimate.efficiency): known
answers on synthetic runs whose truth is known, standard errors against the spread over
repeated runs, and input validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, ndtr

from tailscope.errors import DataError
from tailscope.estimate import covariate_adjusted, margin_based, shrunk
from tailscope.estimate.efficiency import plain
from tailscope.estimate.memorization import memorization
from tailscope.estimate.synthetic import _gaussian_mean, planted_run

REPEATS, K = 40, 150  # independent runs of K models each, cut from one synthetic run


def _effect(run, quality_sd):
    """The planted logit effects d_i, recovered from the true memorization by bisection."""
    c, target = run.train_logit[run.memorized], run.memorization[run.memorized]
    low, high = np.zeros_like(c), np.full_like(c, 20.0)
    for _ in range(60):
        middle = (low + high) / 2
        above = _gaussian_mean(c + middle, quality_sd) - _gaussian_mean(c, quality_sd) > target
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    return (low + high) / 2


def _truth(run, quality_sd):
    """Memorization given the models' drawn qualities q_k (not over q's distribution),
    which is what the mean over repeated runs cut from the same models estimates."""
    truth = np.zeros(run.masks.shape[1])
    base = run.train_logit[run.memorized][None, :] + run.quality[:, None]
    effect = _effect(run, quality_sd)
    truth[run.memorized] = (expit(base + effect) - expit(base)).mean(axis=0)
    return truth


@pytest.fixture(scope="module")
def repeated():
    """Estimates of REPEATS independent runs of K models with model quality varying
    (logit sd 1), each estimator's (REPEATS, n) estimates and SEs, and the truth."""
    sd = 1.0
    run = planted_run(REPEATS * K, 300, 300, 0, n_memorized=30, quality_sd=sd, random_state=0)
    quality = run.correct_test.mean(axis=1)  # each model's test accuracy
    functions = {
        "plain": lambda m, c, q: plain(m, c),
        "covariate": covariate_adjusted,
        "shrunk": lambda m, c, q: shrunk(m, c),
    }
    out = {}
    for name, function in functions.items():
        estimates = [
            function(run.masks[block], run.correct_train[block], quality[block])
            for block in (slice(r * K, (r + 1) * K) for r in range(REPEATS))
        ]
        out[name] = tuple(np.array(x) for x in zip(*estimates, strict=True))
    return run, _truth(run, sd), out


def _z(estimates, truth):
    spread = estimates.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (estimates.mean(axis=0) - truth) / (spread / np.sqrt(len(estimates)))


@pytest.mark.parametrize("name", ["plain", "covariate"])
def test_the_unbiased_estimators_recover_the_planted_memorization(repeated, name):
    run, truth, out = repeated
    z = _z(out[name][0], truth)[run.memorized]
    assert np.abs(z).max() < 4.5  # 30 t-statistics of 39 df
    assert np.mean(z**2) < 2.0  # about 1 if unbiased
    null = np.setdiff1d(np.arange(len(truth)), run.memorized)
    z_null = _z(out[name][0], truth)[null]
    assert abs(np.nanmean(z_null)) < 0.5


@pytest.mark.parametrize("name", ["plain", "covariate"])
def test_standard_errors_match_the_spread_over_repeated_runs(repeated, name):
    _, _, out = repeated
    estimates, se = out[name]
    variance = estimates.var(axis=0, ddof=1)
    used = variance > 0
    # A variance from R runs has relative sd sqrt(2 / (R - 1)); averaged over the examples.
    tolerance = 5 * np.sqrt(2 / ((REPEATS - 1) * used.sum()))
    ratio = (se[:, used] ** 2).mean() / variance[used].mean()
    assert abs(ratio - 1) < tolerance + 2 / K  # the plug-in SE is low by O(1/K)


def test_covariate_adjustment_lowers_the_variance_when_quality_varies(repeated):
    _, _, out = repeated
    plain_var = out["plain"][0].var(axis=0, ddof=1).mean()
    adjusted_var = out["covariate"][0].var(axis=0, ddof=1).mean()
    assert adjusted_var < 0.95 * plain_var
    assert (out["covariate"][1] ** 2).mean() < 0.95 * (out["plain"][1] ** 2).mean()


def test_shrinkage_lowers_the_error_overall_but_underestimates_the_largest(repeated):
    run, truth, out = repeated
    mse = {name: ((out[name][0] - truth) ** 2).mean() for name in ("plain", "shrunk")}
    assert mse["shrunk"] < 0.7 * mse["plain"]
    error = (out["shrunk"][0] - truth)[:, run.memorized].mean(axis=0)
    spread = out["shrunk"][0][:, run.memorized].std(axis=0, ddof=1) / np.sqrt(REPEATS)
    largest = truth[run.memorized] > np.median(truth[run.memorized])
    assert error[largest].mean() < -3 * np.sqrt((spread[largest] ** 2).mean() / largest.sum())


def test_covariate_adjusted_is_ols_with_hc0_standard_errors():
    rng = np.random.default_rng(1)
    masks = rng.random((60, 9)) < 0.7
    quality = rng.normal(size=60)
    correct = rng.random((60, 9)) < expit(0.5 + quality)[:, None]
    estimate, se = covariate_adjusted(masks, correct, quality, chunk_size=4)
    for i in range(9):
        x = np.column_stack([np.ones(60), masks[:, i], quality - quality.mean()])
        beta = np.linalg.lstsq(x, correct[:, i].astype(float), rcond=None)[0]
        residual = correct[:, i] - x @ beta
        bread = np.linalg.inv(x.T @ x)
        sandwich = bread @ (x.T * residual**2) @ x @ bread
        assert estimate[i] == pytest.approx(beta[1], abs=1e-12)
        assert se[i] == pytest.approx(np.sqrt(sandwich[1, 1]), abs=1e-12)


def test_covariate_adjusted_with_a_covariate_per_model_and_example():
    rng = np.random.default_rng(6)
    masks = rng.random((60, 9)) < 0.7
    quality = rng.normal(size=(60, 9))
    correct = rng.random((60, 9)) < expit(0.5 + quality)
    estimate, se = covariate_adjusted(masks, correct, quality, chunk_size=4)
    for i in range(9):
        alone = covariate_adjusted(masks[:, [i]], correct[:, [i]], quality[:, i])
        assert estimate[i] == pytest.approx(alone[0][0], abs=1e-12)
        assert se[i] == pytest.approx(alone[1][0], abs=1e-12)
    quality[:, 3] = 0.8  # no variation in one column: the plain estimate there
    estimate, se = covariate_adjusted(masks, correct, quality)
    d, s = plain(masks, correct)
    assert (estimate[3], se[3]) == (pytest.approx(d[3]), pytest.approx(s[3]))


def test_covariate_adjusted_without_quality_variation_is_the_plain_estimator():
    run = planted_run(50, 40, 10, 0, n_memorized=5, random_state=2)
    estimate, se = covariate_adjusted(run.masks, run.correct_train, np.full(50, 0.9))
    result = memorization(run.masks, run.correct_train)
    np.testing.assert_allclose(estimate, result.value, atol=1e-12)
    np.testing.assert_allclose(se, result.se, atol=1e-12)


def test_undefined_where_an_example_is_in_every_subset_or_none():
    masks = np.ones((6, 3), dtype=bool)
    masks[:3, 1] = False
    masks[:, 2] = False
    correct = np.eye(6, 3, dtype=bool)
    margins = np.arange(18.0).reshape(6, 3) - 5
    for estimate, se in (
        covariate_adjusted(masks, correct, np.arange(6.0)),
        margin_based(masks, margins),
        shrunk(masks, correct),
        plain(masks, correct),
    ):
        assert np.isnan(estimate[[0, 2]]).all() and np.isnan(se[[0, 2]]).all()
        assert np.isfinite(estimate[1]) and np.isfinite(se[1])


# --- margins ---------------------------------------------------------------------------------


def _normal_margins(rng, masks, mu_in, sd_in, mu_out, sd_out):
    mu = np.where(masks, mu_in, mu_out)
    sd = np.where(masks, sd_in, sd_out)
    return rng.normal(mu, sd).astype(np.float16)


def test_margin_based_recovers_normal_tail_differences_with_honest_standard_errors():
    rng = np.random.default_rng(3)
    n = 40
    mu_in, mu_out = rng.uniform(-1, 3, n), rng.uniform(-3, 1, n)
    sd_in, sd_out = rng.uniform(0.5, 2, n), rng.uniform(0.5, 2, n)
    truth = ndtr(mu_in / sd_in) - ndtr(mu_out / sd_out)
    estimates, ses = [], []
    for _ in range(REPEATS):
        masks = rng.random((K, n)) < 0.7
        margins = _normal_margins(rng, masks, mu_in, sd_in, mu_out, sd_out)
        estimate, se = margin_based(masks, margins)
        estimates.append(estimate)
        ses.append(se)
    estimates, ses = np.array(estimates), np.array(ses)
    z = _z(estimates, truth)
    assert np.abs(z).max() < 4.5 and np.mean(z**2) < 2.0
    ratio = (ses**2).mean() / estimates.var(axis=0, ddof=1).mean()
    assert abs(ratio - 1) < 5 * np.sqrt(2 / ((REPEATS - 1) * n)) + 2 / K
    # It uses the margins' sizes, not only their signs: less variance than the plain one.
    correct = margins > 0
    assert (margin_based(masks, margins)[1] < plain(masks, correct)[1]).mean() > 0.9


def test_margin_based_with_equal_margins_in_a_group():
    masks = np.array([[1, 1], [1, 1], [0, 0], [0, 0], [0, 0]], dtype=bool)
    margins = np.array([[2.0, 2.0], [2.0, 2.0], [-1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    estimate, se = margin_based(masks, margins)
    np.testing.assert_array_equal(estimate, [1.0, 1.0])  # a margin of 0 is not correct
    np.testing.assert_array_equal(se, [0.0, 0.0])
    one_in = margin_based(masks[1:], margins[1:])  # K_in = 1: no standard deviation
    assert np.isnan(one_in[0]).all() and np.isnan(one_in[1]).all()


def test_margin_based_by_hand():
    masks = np.array([1, 1, 1, 0, 0, 0], dtype=bool)[:, None]
    margins = np.array([1.0, 2.0, 3.0, -1.0, 0.0, 2.0])[:, None]
    estimate, se = margin_based(masks, margins)
    z_in, z_out = 2.0 / 1.0, (1 / 3) / np.sqrt(((4 / 3) ** 2 + (1 / 3) ** 2 + (5 / 3) ** 2) / 2)
    assert estimate[0] == pytest.approx(ndtr(z_in) - ndtr(z_out))
    pdf = lambda z: np.exp(-z * z / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    variance = sum(pdf(z) ** 2 * (1 / 3 + z * z / 4) for z in (z_in, z_out))
    assert se[0] == pytest.approx(np.sqrt(variance))


# --- shrinkage -------------------------------------------------------------------------------


def test_shrunk_with_one_bin_by_hand():
    run = planted_run(80, 200, 10, 0, n_memorized=20, random_state=4)
    d, s = plain(run.masks, run.correct_train)
    mean, tau2 = d.mean(), max(d.var() - (s**2).mean(), 0)
    assert tau2 > 0
    weight = np.where(s > 0, tau2 / (tau2 + s**2), 1.0)
    estimate, se = shrunk(run.masks, run.correct_train, bins=1)
    np.testing.assert_allclose(estimate, mean + weight * (d - mean))
    np.testing.assert_allclose(se, np.sqrt(weight) * s)
    binned, _ = shrunk(run.masks, run.correct_train, bins=5)
    assert not np.allclose(binned, estimate)


# --- inputs ----------------------------------------------------------------------------------


def test_the_estimators_work_chunk_by_chunk():
    run = planted_run(30, 50, 10, 0, n_memorized=5, random_state=5)
    quality = run.correct_test.mean(axis=1)
    margins = np.where(run.correct_train, 1.0, -1.0) + np.arange(50) / 100
    pairs = [
        (covariate_adjusted, (run.masks, run.correct_train, quality)),
        (margin_based, (run.masks, margins)),
        (shrunk, (run.masks, run.correct_train)),
    ]
    for function, args in pairs:
        whole = function(*args)
        chunked = function(*args, chunk_size=7)
        np.testing.assert_allclose(chunked, whole, atol=1e-12)


def test_inputs_are_validated():
    masks = np.ones((4, 3), dtype=bool)
    masks[:2] = False
    correct = np.zeros((4, 3), dtype=bool)
    with pytest.raises(DataError, match="shape"):
        covariate_adjusted(masks, correct[:, :2], np.zeros(4))
    with pytest.raises(DataError, match="rows"):
        covariate_adjusted(masks, correct[:3], np.zeros(4))
    with pytest.raises(DataError, match="quality"):
        covariate_adjusted(masks, correct, np.zeros(3))
    with pytest.raises(DataError, match="quality"):
        covariate_adjusted(masks, correct, np.zeros((4, 2)))
    with pytest.raises(DataError, match="quality"):
        covariate_adjusted(masks, correct, np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(DataError, match="0 and 1"):
        covariate_adjusted(masks, correct + 2.0, np.zeros(4))
    with pytest.raises(DataError, match="shape"):
        margin_based(masks, np.zeros((4, 2)))
    with pytest.raises(DataError, match="finite"):
        margin_based(masks, np.full((4, 3), np.nan))
    with pytest.raises(DataError, match="numbers"):
        margin_based(masks, correct)
    with pytest.raises(DataError, match="shape"):
        shrunk(masks, correct[:, :2])
    with pytest.raises(DataError, match="bins"):
        shrunk(masks, correct, bins=0)
    with pytest.raises(DataError, match="chunk_size"):
        margin_based(masks, np.zeros((4, 3)), chunk_size=0)
