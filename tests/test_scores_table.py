"""The per-example score tables (tailscope.scores.compute_scores): columns from the inputs
given, values from the score functions, one-line reasons for what is left out."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from tailscope.errors import DataError
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.scores import (
    compute_scores,
    cscore,
    heldout_accuracy,
    label_issues,
    lira_evaluation,
    vulnerability,
)

K, N, T, C = 36, 40, 25, 3


@pytest.fixture
def pool():
    """A multi-ratio pool (0.3, 0.5, 0.7; 12 models each) with every array a store holds."""
    rng = np.random.default_rng(0)
    ratios = np.repeat([0.3, 0.5, 0.7], K // 3)
    masks = rng.random((K, N)) < ratios[:, None]
    y_train, y_test = rng.integers(0, C, N), rng.integers(0, C, T)
    phi_train = (rng.normal(0, 1, (K, N)) + masks).astype(np.float16)
    phi_test = rng.normal(0, 1, (K, T)).astype(np.float16)

    def probs(rows):
        p = rng.dirichlet(np.ones(C), rows)
        return p

    return {
        "y_train": y_train,
        "y_test": y_test,
        "masks": masks,
        "ratios": ratios,
        "correct_train": phi_train > 0,
        "correct_test": phi_test > 0,
        "phi_train": phi_train,
        "oos_prob_train": probs(N),
        "oos_prob_test": probs(T),
    }


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        return fn(*args, **kwargs)


def test_every_score_from_a_full_multi_ratio_pool(pool):
    pytest.importorskip("cleanlab")
    half = np.arange(12, 24)  # the models of ratio 0.5, for LiRA (the caller chooses)
    train, test, skipped, lira, notes = quiet(
        compute_scores,
        **pool,
        membership_models=half,
        train_index=np.arange(N) + 100,
        lira_options={"fprs": (0.01,)},
    )
    assert skipped == [] and notes == []
    ratio_columns = [f"heldout_acc{se}_r{r}" for r in ("0.3", "0.5", "0.7") for se in ("", "_se")]
    assert list(train.columns) == [
        "index",
        "label",
        "heldout_acc",
        "heldout_acc_se",
        *ratio_columns,
        "cscore",
        "cscore_se",
        "lira_online",
        "lira_offline",
        "lira_fixed",
        "vulnerability",
        "vulnerability_se",
        "label_quality",
        "label_issue",
        "suggested_label",
    ]
    assert list(test.columns) == [
        "index",
        "label",
        "heldout_acc",
        "heldout_acc_se",
        *ratio_columns,
        "cscore",
        "cscore_se",
        "label_quality",
        "label_issue",
        "suggested_label",
    ]
    assert len(train) == N and len(test) == T
    np.testing.assert_array_equal(train["index"], np.arange(N) + 100)
    np.testing.assert_array_equal(test["index"], np.arange(T))
    np.testing.assert_array_equal(train["label"], pool["y_train"])

    held = quiet(heldout_accuracy, pool["correct_train"], pool["masks"], pool["ratios"])
    np.testing.assert_array_equal(train["heldout_acc"], held.accuracy)
    np.testing.assert_array_equal(train["heldout_acc_r0.5"], held.ratio_accuracy[1])
    np.testing.assert_array_equal(
        train["cscore"], quiet(cscore, pool["correct_train"], pool["ratios"], pool["masks"])[0]
    )
    np.testing.assert_array_equal(
        test["cscore_se"], cscore(pool["correct_test"], pool["ratios"])[1]
    )
    # LiRA and the vulnerability run on the membership models only (rows 12..23).
    expected = lira_evaluation(pool["masks"][half], pool["phi_train"][half], fprs=(0.01,))
    np.testing.assert_array_equal(train["lira_fixed"], expected.example_tpr["online_fixed"])
    assert lira.roc["online"].auc == expected.roc["online"].auc
    assert (
        lira.roc["online"].auc
        != lira_evaluation(pool["masks"], pool["phi_train"]).roc["online"].auc
    )
    np.testing.assert_array_equal(
        train["vulnerability"],
        quiet(vulnerability, pool["masks"][half], pool["phi_train"][half])[0],
    )
    labels = label_issues(pool["oos_prob_test"], pool["y_test"])
    np.testing.assert_array_equal(test["label_quality"], labels.label_quality)
    assert test["suggested_label"].dtype == pd.Int64Dtype()
    np.testing.assert_array_equal(test["suggested_label"].to_numpy(), labels.suggested_label)


def test_missing_inputs_are_skipped_with_one_line_reasons(pool):
    train, test, skipped, lira, notes = compute_scores(
        pool["y_train"],
        pool["y_test"],
        masks=pool["masks"],
        correct_train=pool["correct_train"],
        source="this run's store (format 1)",
    )
    assert lira is None and notes == []
    assert list(train.columns) == ["index", "label", "heldout_acc", "heldout_acc_se"]
    assert list(test.columns) == ["index", "label"]
    assert all("\n" not in reason for reason in skipped)
    text = " | ".join(skipped)
    assert "cscore: the C-score averages held-out accuracy over several subset ratios" in text
    assert "needs correct_test, which this run's store (format 1) does not hold" in text
    assert (
        "LiRA needs the masks and the logit margins phi, which this run's store (format 1) "
        "does not hold; retrain to get them" in text
    )
    assert "oos_prob_train" in text and "oos_prob_test" in text
    assert len(skipped) == 5


def test_single_ratio_run_has_no_cscore_and_says_so(pool):
    ratios = np.full(K, 0.7)
    train, _, skipped, _, _ = compute_scores(
        pool["y_train"], masks=pool["masks"], ratios=ratios, correct_train=pool["correct_train"]
    )
    assert "cscore" not in train and "heldout_acc_r0.7" not in train
    assert any("every model here used ratio 0.7" in reason for reason in skipped)


def test_missing_cleanlab_skips_label_scores(pool, monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    train, test, skipped, _, _ = compute_scores(
        pool["y_train"],
        pool["y_test"],
        oos_prob_train=pool["oos_prob_train"],
        oos_prob_test=pool["oos_prob_test"],
    )
    assert "label_quality" not in train and "label_quality" not in test
    assert sum("pip install 'tailscope[labels]'" in reason for reason in skipped) == 2


def test_examples_without_out_of_sample_probabilities_have_no_suggestion(pool):
    pytest.importorskip("cleanlab")
    probs = pool["oos_prob_train"].copy()
    probs[3] = np.nan  # in every model's subset
    train = quiet(compute_scores, pool["y_train"], oos_prob_train=probs).train
    assert train["suggested_label"].isna().tolist() == [i == 3 for i in range(N)]
    assert np.isnan(train["label_quality"][3]) and not train["label_issue"][3]


def test_bad_shapes_name_the_argument(pool):
    with pytest.raises(DataError, match="masks must have shape"):
        compute_scores(pool["y_train"][:-1], masks=pool["masks"])
    with pytest.raises(DataError, match="oos_prob_test has"):
        compute_scores(pool["y_train"], pool["y_test"], oos_prob_test=pool["oos_prob_train"])
    with pytest.raises(DataError, match="y_train must be 1-D"):
        compute_scores(np.zeros((2, 2), dtype=int))
    with pytest.raises(DataError, match="ratios must have shape"):
        compute_scores(pool["y_train"], masks=pool["masks"], ratios=[0.5])
