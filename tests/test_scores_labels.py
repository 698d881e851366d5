"""Label issues from out-of-sample probabilities (tailscope.scores.label_issues): the stated
formulas, and planted label flips on scikit-learn's digits recovered."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from tailscope.errors import DataError, TailscopeError
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.scores import MissingDependencyError, cleanlab_version, label_issues

pytest.importorskip("cleanlab")


def test_label_scores_are_the_stated_formulas():
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # agrees
            [0.1, 0.8, 0.1],  # contradicted by 0.7: quality 0.15
            [0.4, 0.45, 0.15],  # contradicted by 0.05: quality 0.475
            [np.nan, np.nan, np.nan],  # never held out
            [0.5, 0.5, 0.0],  # tie: suggests the lower class
        ]
    )
    labels = np.array([0, 0, 0, 1, 1])
    with pytest.warns(UndefinedEstimateWarning, match="1 of 5 examples"):
        result = label_issues(probs, labels)
    np.testing.assert_allclose(result.label_quality, [0.75, 0.15, 0.475, np.nan, 0.5])
    np.testing.assert_array_equal(result.label_issue, [False, True, False, False, False])
    np.testing.assert_array_equal(result.suggested_label, [0, 1, 1, -1, 0])
    np.testing.assert_allclose(result.given_prob, [0.7, 0.1, 0.4, np.nan, 0.5])
    with pytest.warns(UndefinedEstimateWarning):
        loose = label_issues(probs, labels, threshold=0.5)
    np.testing.assert_array_equal(loose.label_issue, [False, True, True, False, False])


def test_label_issues_reject_bad_input():
    probs = np.array([[0.6, 0.4], [0.3, 0.7]])
    with pytest.raises(DataError, match="labels holds class 2"):
        label_issues(probs, [0, 2])
    with pytest.raises(DataError, match="oos_prob rows must sum to 1"):
        label_issues(probs * 1.5, [0, 1])
    with pytest.raises(DataError, match="negative"):
        label_issues(np.array([[1.2, -0.2], [0.5, 0.5]]), [0, 1])
    with pytest.raises(DataError, match="threshold must be in"):
        label_issues(probs, [0, 1], threshold=0.7)
    with pytest.raises(DataError, match="rule must be one of"):
        label_issues(probs, [0, 1], rule="vote")
    with pytest.raises(DataError, match="labels must have shape"):
        label_issues(probs, [0, 1, 1])


def test_missing_cleanlab_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'tailscope\[labels\]'"):
        label_issues(np.array([[0.6, 0.4]]), [0])
    assert issubclass(MissingDependencyError, TailscopeError)
    assert issubclass(MissingDependencyError, ImportError)
    assert cleanlab_version() is None


# --- planted flips ---------------------------------------------------------------------------

N_MODELS = 6
FLIP_RATE = 0.05


def pool_probabilities(x, labels, rng):
    """Out-of-sample probabilities as a run's store forms them: K models on random halves,
    each example's mean softmax over the models that did not train on it."""
    n = len(labels)
    total, count = np.zeros((n, 10)), np.zeros(n)
    for _ in range(N_MODELS):
        inside = np.zeros(n, dtype=bool)
        inside[rng.permutation(n)[: n // 2]] = True
        model = LogisticRegression(max_iter=200).fit(x[inside], labels[inside])
        total[~inside] += model.predict_proba(x[~inside])
        count[~inside] += 1
    with np.errstate(invalid="ignore"):
        return total / count[:, None]


@pytest.fixture(scope="module")
def digits_pools():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(0)
    flipped = rng.random(len(y)) < FLIP_RATE
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter
        clean_probs = pool_probabilities(x, y, rng)
        noisy_probs = pool_probabilities(x, noisy, rng)
    return y, noisy, flipped, clean_probs, noisy_probs


def _issues(probs, labels, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)  # 1/64 never held out
        return label_issues(probs, labels, **kwargs)


def test_planted_flips_are_recovered(digits_pools):
    y, noisy, flipped, _, probs = digits_pools
    result = _issues(probs, noisy)
    defined = ~np.isnan(result.label_quality)
    planted = flipped & defined
    m = int(planted.sum())
    assert m > 50  # ~5% of 1797
    # The m lowest-quality examples are mostly the m flips (chance would give 5%).
    lowest = np.argsort(np.where(defined, result.label_quality, np.inf))[:m]
    recall_at_m = planted[lowest].mean()
    flagged = result.label_issue
    recall = (flagged & planted).sum() / m
    precision = (flagged & planted).sum() / flagged.sum()
    print(
        f"flips {m}: recall@{m} {recall_at_m:.3f}, flags {flagged.sum()}: "
        f"recall {recall:.3f}, precision {precision:.3f}"
    )
    assert recall_at_m >= 0.8
    assert recall >= 0.75 and precision >= 0.8
    # Where a flip is flagged, the suggestion is the true label.
    assert (result.suggested_label[flagged & planted] == y[flagged & planted]).mean() >= 0.95


def test_few_flags_on_clean_labels(digits_pools):
    y, _, _, probs, _ = digits_pools
    result = _issues(probs, y)
    defined = ~np.isnan(result.label_quality)
    misclassified = (result.suggested_label != y) & defined
    print(f"clean: {result.label_issue.sum()} flags, {misclassified.sum()} misclassified")
    # Calibrated for at most 2% of a clean set, and only among the misclassified.
    assert result.label_issue.sum() <= 0.02 * defined.sum()
    assert not (result.label_issue & ~misclassified).any()


def test_confident_learning_rule_finds_flips(digits_pools):
    _, noisy, flipped, _, probs = digits_pools
    result = _issues(probs, noisy, rule="confident_learning")
    assert result.label_issue.dtype == np.bool_ and np.isnan(result.threshold)
    flagged = result.label_issue
    assert (flagged & flipped).sum() / flagged.sum() >= 0.5  # chance: 5%
