"""Held-out accuracy and C-scores (tailscope.scores.heldout, tailscope.scores.cscore)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tailscope.errors import DataError, DatasetNotAvailableError
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.scores import (
    compare_cscores,
    cscore,
    cscore_from_heldout,
    heldout_accuracy,
    load_released_cscores,
)

RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)


def multi_ratio_pool(rng, models_per_ratio: int, n: int, ratios=RATIOS):
    """Masks of exactly round(r n) examples per model, ratios, and correctness that depends
    on the example, the ratio and membership (so every estimate differs per ratio)."""
    ratios_k = np.repeat(np.asarray(ratios, dtype=float), models_per_ratio)
    rank = np.argsort(rng.random((len(ratios_k), n)), axis=1)
    masks = rank < np.round(ratios_k * n)[:, None]
    ease = rng.random(n)
    p = np.clip(ease[None, :] * (0.5 + ratios_k[:, None]) + 0.3 * masks, 0, 1)
    correct = rng.random(masks.shape) < p
    return masks, correct, ratios_k


def brute_force(correct, masks, ratios):
    """Held-out accuracy per (ratio, example) and pooled, with plug-in SEs, by loops."""
    levels = sorted(set(ratios.tolist()))
    n = correct.shape[1]
    acc = np.full((len(levels), n), np.nan)
    se = np.full((len(levels), n), np.nan)
    pooled = np.full(n, np.nan)
    pooled_se = np.full(n, np.nan)
    for i in range(n):
        held = ~masks[:, i] if masks is not None else np.ones(len(correct), bool)
        if held.any():
            values = correct[held, i].astype(float)
            pooled[i] = values.mean()
            pooled_se[i] = np.sqrt(values.var() / len(values))
        for r, level in enumerate(levels):
            rows = held & (ratios == level)
            if rows.any():
                values = correct[rows, i].astype(float)
                acc[r, i] = values.mean()
                se[r, i] = np.sqrt(values.var() / len(values))
    return np.array(levels), acc, se, pooled, pooled_se


# --- held-out accuracy -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_heldout_accuracy_matches_brute_force(chunk_size):
    rng = np.random.default_rng(0)
    masks, correct, ratios = multi_ratio_pool(rng, 6, 23)
    held = heldout_accuracy(correct, masks, ratios, chunk_size=chunk_size)
    levels, acc, se, pooled, pooled_se = brute_force(correct, masks, ratios)
    np.testing.assert_allclose(held.ratios, levels)
    np.testing.assert_allclose(held.ratio_accuracy, acc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(held.ratio_se, se, rtol=0, atol=1e-12)
    np.testing.assert_allclose(held.accuracy, pooled, rtol=0, atol=1e-12)
    np.testing.assert_allclose(held.se, pooled_se, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(held.k_out, (~masks).sum(axis=0))
    np.testing.assert_array_equal(held.ratio_k_out.sum(axis=0), held.k_out)


def test_heldout_accuracy_without_ratios_and_for_test_examples():
    rng = np.random.default_rng(1)
    masks, correct, ratios = multi_ratio_pool(rng, 4, 17)
    held = heldout_accuracy(correct, masks)
    _, _, _, pooled, pooled_se = brute_force(correct, masks, ratios)
    np.testing.assert_allclose(held.accuracy, pooled, rtol=0, atol=1e-12)
    np.testing.assert_allclose(held.se, pooled_se, rtol=0, atol=1e-12)
    assert held.ratios.shape == (0,) and held.ratio_accuracy.shape == (0, 17)
    # Test examples: every model holds them out, so the estimate is the plain mean.
    test = heldout_accuracy(correct.astype(np.uint8))
    np.testing.assert_allclose(test.accuracy, correct.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(test.k_out, np.full(17, len(correct)))


def test_heldout_accuracy_is_nan_where_no_model_held_out_and_warns():
    masks = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=bool)
    correct = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1]], dtype=bool)
    with pytest.warns(UndefinedEstimateWarning, match="1 of 3 examples"):
        held = heldout_accuracy(correct, masks)
    np.testing.assert_allclose(held.accuracy, [np.nan, 1.0, 0.5])
    np.testing.assert_allclose(held.se, [np.nan, 0.0, np.sqrt(0.25 / 2)])


def test_heldout_accuracy_se_covers_the_truth():
    """With a known per-example accuracy p, |acc - p| / se is about standard normal."""
    rng = np.random.default_rng(2)
    n_models, n = 400, 2000
    masks = rng.random((n_models, n)) < 0.7
    p = rng.uniform(0.2, 0.8, n)
    correct = rng.random((n_models, n)) < p
    held = heldout_accuracy(correct, masks)
    z = (held.accuracy - p) / held.se
    # Coverage of +-1.96 SE is 95% up to the normal approximation; 2000 draws give SE 0.5%.
    assert 0.92 < np.mean(np.abs(z) < 1.96) < 0.975


def test_heldout_accuracy_rejects_bad_input():
    masks = np.ones((3, 4), dtype=bool)
    with pytest.raises(DataError, match="correct has shape"):
        heldout_accuracy(np.ones((3, 5)), masks)
    with pytest.raises(DataError, match="correct has 2 rows"):
        heldout_accuracy(np.ones((2, 4)), masks)
    with pytest.raises(DataError, match="correct must hold only 0 and 1"):
        heldout_accuracy(np.full((3, 4), 2), masks)
    with pytest.raises(DataError, match="ratios must have shape"):
        heldout_accuracy(np.ones((3, 4)), masks, ratios=[0.5, 0.5])
    with pytest.raises(DataError, match="ratios must lie strictly between 0 and 1"):
        heldout_accuracy(np.ones((3, 4)), masks, ratios=[0.5, 0.5, 1.0])


# --- C-scores --------------------------------------------------------------------------------


@pytest.mark.parametrize("test_examples", [False, True])
def test_cscore_matches_brute_force(test_examples):
    rng = np.random.default_rng(3)
    masks, correct, ratios = multi_ratio_pool(rng, 8, 19)
    masks = None if test_examples else masks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        score, se = cscore(correct, ratios, masks)
    _, acc, acc_se, _, _ = brute_force(correct, masks, ratios)
    expected = np.mean(acc, axis=0)  # NaN where some ratio held nothing out
    expected_se = np.sqrt(np.sum(acc_se**2, axis=0)) / len(RATIOS)
    np.testing.assert_allclose(score, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(se, expected_se, rtol=0, atol=1e-12)
    # Test examples are held out by every model; train examples in all 8 models of ratio
    # 0.9 (probability 0.9**8 = 0.43) have no C-score.
    assert np.isfinite(score).all() if test_examples else np.isnan(score).any()


def test_cscore_is_nan_where_one_ratio_holds_nothing_out():
    # Example 0 is in both models of ratio 0.9: no held-out model there, so no C-score,
    # although ratio 0.1 has an estimate for it.
    masks = np.array([[0, 1], [0, 0], [1, 1], [1, 0]], dtype=bool)
    correct = np.array([[1, 1], [0, 1], [1, 0], [1, 1]], dtype=bool)
    ratios = np.array([0.1, 0.1, 0.9, 0.9])
    with pytest.warns(UndefinedEstimateWarning, match="1 of 2 examples"):
        score, se = cscore(correct, ratios, masks)
    np.testing.assert_allclose(score, [np.nan, (1.0 + 1.0) / 2])
    assert np.isnan(se[0]) and se[1] == 0.0


def test_cscore_se_covers_the_truth():
    """Correctness ~ Bernoulli(q_r[i]) per ratio: the C-score estimates mean_r q_r[i]."""
    rng = np.random.default_rng(4)
    ratios = np.repeat([0.2, 0.5, 0.8], 150)
    n = 1500
    masks = rng.random((len(ratios), n)) < ratios[:, None]
    q = np.clip(rng.uniform(0.1, 0.7, n)[None, :] + 0.3 * ratios[:, None], 0, 1)
    correct = rng.random(masks.shape) < q
    score, se = cscore(correct, ratios, masks)
    truth = np.unique(q, axis=0).mean(axis=0)
    assert 0.92 < np.mean(np.abs(score - truth) < 1.96 * se) < 0.975


def test_cscore_needs_ratios():
    rng = np.random.default_rng(5)
    masks, correct, _ = multi_ratio_pool(rng, 2, 5)
    with pytest.raises(DataError, match="ratios"):
        cscore_from_heldout(heldout_accuracy(correct, masks))


def test_cscore_from_heldout_equals_cscore():
    rng = np.random.default_rng(6)
    masks, correct, ratios = multi_ratio_pool(rng, 5, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        a = cscore_from_heldout(heldout_accuracy(correct, masks, ratios))
        b = cscore(correct, ratios, masks)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# --- released scores -------------------------------------------------------------------------


def test_compare_cscores_on_known_relations():
    rng = np.random.default_rng(7)
    released = rng.beta(5, 1, 3000)
    ours = released.copy()
    ours[:10] = np.nan
    result = compare_cscores(ours, released, tail=0.9)
    assert result["pearson"] == pytest.approx(1.0)
    assert result["spearman_tail"] == pytest.approx(1.0)
    assert result["n"] == 2990 and result["n_undefined"] == 10
    assert result["n_tail"] == int(np.sum(released[10:] < 0.9))
    # A monotone but non-linear map keeps the rank correlation, lowers Pearson's.
    bent = compare_cscores(released**8, released)
    assert bent["spearman_tail"] == pytest.approx(1.0)
    assert bent["pearson"] < 0.97
    # Noise independent of the scores: correlations near 0 (SE ~ 1/sqrt(n)).
    noise = compare_cscores(rng.random(3000), released)
    assert abs(noise["pearson"]) < 4 / np.sqrt(3000)
    with pytest.raises(DataError, match="equal length"):
        compare_cscores(ours[:5], released)


def test_load_released_cscores(tmp_path):
    path = tmp_path / "c.npz"
    labels = np.array([3, 1, 4, 1, 5])
    np.savez(path, scores=np.linspace(0, 1, 5), labels=labels)
    np.testing.assert_allclose(load_released_cscores(path, labels), np.linspace(0, 1, 5))
    wrong = labels.copy()
    wrong[2] = 0
    with pytest.raises(DataError, match="1 of 5 labels differ.*position 2"):
        load_released_cscores(path, wrong)
    np.savez(tmp_path / "bad.npz", scores=np.zeros(3))
    with pytest.raises(DataError, match="'scores' and 'labels'"):
        load_released_cscores(tmp_path / "bad.npz")
    with pytest.raises(DatasetNotAvailableError):
        load_released_cscores(tmp_path / "missing.npz")


def test_released_mnist_cscores_load_in_official_order():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "reference" / "mnist_cscores.npz"
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    scores = load_released_cscores(path)
    assert scores.shape == (60000,)
    assert ((scores >= 0) & (scores <= 1)).all()
    try:
        import tailscope as ts

        data = ts.datasets.load("mnist")
    except Exception as err:
        pytest.skip(f"MNIST not available: {err}")
    np.testing.assert_array_equal(load_released_cscores(path, data.y_train), scores)
