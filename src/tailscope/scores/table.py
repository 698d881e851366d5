"""The per-example score tables: every score the given arrays support, one row per example.

:func:`compute_scores` is what ``ts.scores(run)`` calls with the arrays of a run's store. A
score whose inputs are missing is left out, and a one-line reason says which input it needs.

Train columns, in order (each only when its inputs are there):

- ``index``, ``label``: the example's id in its split and its given label;
- ``heldout_acc``, ``heldout_acc_se``: held-out accuracy over every model that did not train
  on the example (masks, correct_train); with ratios also ``heldout_acc_r{r}`` and
  ``heldout_acc_se_r{r}`` per subset ratio r;
- ``cscore``, ``cscore_se``: the C-score (two or more distinct ratios);
- ``lira_online``, ``lira_offline``, ``lira_fixed``: per-example TPR of each LiRA variant
  (online, offline, online with fixed variance) at the global threshold of 0.1% FPR, over
  the leave-one-model-out targets that trained on the example (masks, phi_train), among
  the models ``membership_models`` (in a multi-ratio run: one ratio's; shadows of mixed
  ratios confound membership with the ratio);
- ``vulnerability``, ``vulnerability_se``: AUC of the example's in vs out phi among the
  same models;
- ``label_quality``, ``label_issue``, ``suggested_label``: from the out-of-sample
  probabilities (oos_prob_train; needs cleanlab). ``suggested_label`` is a nullable Int64.

Test columns: ``index``, ``label``, ``heldout_acc`` (+ per ratio), ``cscore``, and the label
columns from ``oos_prob_test``: every model holds a test example out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from tailscope.errors import DataError
from tailscope.scores._checks import check_labels, check_ratios
from tailscope.scores.cscore import cscore_from_heldout
from tailscope.scores.heldout import HeldOutAccuracy, heldout_accuracy
from tailscope.scores.label_issues import (
    DEFAULT_THRESHOLD,
    MissingDependencyError,
    label_issues,
)
from tailscope.scores.lira import LiraEvaluation, lira_evaluation
from tailscope.scores.vulnerability import vulnerability

__all__ = ["LIRA_COLUMNS", "ScoreTables", "compute_scores"]

#: Train-table column of each LiRA variant's per-example TPR.
LIRA_COLUMNS = {"online": "lira_online", "offline": "lira_offline", "online_fixed": "lira_fixed"}


class ScoreTables(NamedTuple):
    """The per-example tables, why some scores are absent, and the LiRA evaluation.

    ``train`` (n rows) and ``test`` (t rows, 0 without ``y_test``) are DataFrames;
    ``skipped`` holds one line per score left out; ``lira`` is the full
    :class:`~tailscope.scores.lira.LiraEvaluation` (ROC, AUC, TPR at low FPR) or None;
    ``notes`` holds one line per choice the report should state (e.g. which models LiRA
    used in a multi-ratio run).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    skipped: list[str]
    lira: LiraEvaluation | None
    notes: list[str]


def _labels(labels: ArrayLike, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"{name} must be 1-D (one label per example), got shape {labels.shape}")
    return check_labels(labels, len(labels), name)


def _index(index: ArrayLike | None, n: int, name: str) -> np.ndarray:
    if index is None:
        return np.arange(n, dtype=np.int64)
    return check_labels(index, n, name)


def _heldout_columns(held: HeldOutAccuracy) -> dict[str, np.ndarray]:
    columns = {"heldout_acc": held.accuracy, "heldout_acc_se": held.se}
    if len(held.ratios) > 1:
        for r, ratio in enumerate(held.ratios):
            columns[f"heldout_acc_r{ratio:g}"] = held.ratio_accuracy[r]
            columns[f"heldout_acc_se_r{ratio:g}"] = held.ratio_se[r]
    return columns


def _heldout_and_cscore(
    correct, masks, ratios, levels, split: str, skipped: list[str], chunk_size
) -> dict[str, np.ndarray]:
    held = heldout_accuracy(correct, masks, ratios, chunk_size=chunk_size)
    columns = _heldout_columns(held)
    if len(held.ratios) > 1:
        columns["cscore"], columns["cscore_se"] = cscore_from_heldout(held)
    elif split == "train":
        if levels is None:
            skipped.append(
                "cscore: the C-score averages held-out accuracy over several subset ratios; "
                "without each model's ratio (ratios) it is not defined"
            )
        else:
            skipped.append(
                f"cscore: the C-score averages held-out accuracy over several subset ratios; "
                f"every model here used ratio {levels[0]:g}, so heldout_acc is its value at "
                "that ratio only"
            )
    return columns


def _label_columns(
    probs, labels, split: str, threshold: float, skipped: list[str]
) -> dict[str, Any]:
    try:
        result = label_issues(probs, labels, threshold=threshold)
    except MissingDependencyError as err:
        skipped.append(f"label_quality ({split}): {err}")
        return {}
    suggested = pd.array(result.suggested_label, dtype="Int64")
    suggested[result.suggested_label < 0] = pd.NA
    return {
        "label_quality": result.label_quality,
        "label_issue": result.label_issue,
        "suggested_label": suggested,
    }


def compute_scores(
    y_train: ArrayLike,
    y_test: ArrayLike | None = None,
    *,
    masks: ArrayLike | None = None,
    ratios: ArrayLike | None = None,
    correct_train: ArrayLike | None = None,
    correct_test: ArrayLike | None = None,
    phi_train: ArrayLike | None = None,
    membership_models: ArrayLike | None = None,
    oos_prob_train: ArrayLike | None = None,
    oos_prob_test: ArrayLike | None = None,
    train_index: ArrayLike | None = None,
    test_index: ArrayLike | None = None,
    source: str = "the inputs",
    label_threshold: float = DEFAULT_THRESHOLD,
    lira_options: Mapping[str, Any] | None = None,
    chunk_size: int | None = None,
) -> ScoreTables:
    """Every per-example score the inputs support (see the module docstring for columns).

    Args:
        y_train: (n,) train labels; y_test: (t,) test labels (None: empty test table).
        masks: (K, n) subset membership; ratios: (K,) subset ratio per model.
        correct_train, correct_test: (K, n), (K, t) correctness.
        phi_train: (K, n) logit margins on the train examples.
        membership_models: rows of ``masks``/``phi_train`` LiRA and the vulnerability use
            (default: all; give one ratio's models in a multi-ratio run).
        oos_prob_train, oos_prob_test: (n, C), (t, C) out-of-sample class probabilities.
        train_index, test_index: the examples' ids in their splits (default 0..n-1).
        source: how the skip reasons name where the inputs came from, e.g.
            ``"this run's store (format 1)"``.
        label_threshold: the label-issue threshold of :func:`label_issues`.
        lira_options: keyword arguments for :func:`lira_evaluation` (e.g. ``targets``).
        chunk_size: examples per chunk for the (K, n) arrays.

    Returns:
        :class:`ScoreTables` ``(train, test, skipped, lira, notes)``.
    """
    y_train = _labels(y_train, "y_train")
    n = len(y_train)
    train: dict[str, Any] = {"index": _index(train_index, n, "train_index"), "label": y_train}
    y_test = np.empty(0, dtype=np.int64) if y_test is None else _labels(y_test, "y_test")
    t = len(y_test)
    test: dict[str, Any] = {"index": _index(test_index, t, "test_index"), "label": y_test}
    skipped: list[str] = []
    notes: list[str] = []

    if masks is not None and np.shape(masks)[1:] != (n,):
        raise DataError(
            f"masks must have shape (n_models, {n}) to match y_train, got {np.shape(masks)}"
        )
    levels = None
    if ratios is not None:
        per_model = [a for a in (masks, correct_train, correct_test, phi_train) if a is not None]
        if not per_model:
            raise DataError("ratios were given without any per-model array")
        levels = check_ratios(ratios, np.shape(per_model[0])[0])[0]

    # Held-out accuracy and C-score.
    if masks is not None and correct_train is not None:
        train.update(
            _heldout_and_cscore(correct_train, masks, ratios, levels, "train", skipped, chunk_size)
        )
    else:
        skipped.append(
            f"heldout_acc (train): held-out accuracy needs masks and correct_train, which "
            f"{source} does not hold"
        )
    if correct_test is not None and t:
        test.update(
            _heldout_and_cscore(correct_test, None, ratios, levels, "test", skipped, chunk_size)
        )
    elif t:
        skipped.append(
            f"heldout_acc (test): held-out accuracy needs correct_test, which {source} does "
            "not hold"
        )

    # Membership inference.
    lira = None
    if masks is not None and phi_train is not None:
        rows = slice(None) if membership_models is None else np.asarray(membership_models)
        lira_masks, lira_phi = np.asarray(masks[rows]), np.asarray(phi_train[rows])
        try:
            lira = lira_evaluation(lira_masks, lira_phi, **dict(lira_options or {}))
        except DataError as err:
            skipped.append(f"lira: {err}")
        if lira is not None:
            for variant, column in LIRA_COLUMNS.items():
                if variant in lira.example_tpr:
                    train[column] = lira.example_tpr[variant]
        train["vulnerability"], train["vulnerability_se"] = vulnerability(
            lira_masks, lira_phi, chunk_size=chunk_size
        )
    else:
        skipped.append(
            "lira, vulnerability: LiRA needs the masks and the logit margins phi, which "
            f"{source} does not hold; retrain to get them"
        )

    # Label issues.
    for split, frame, probs, size in (
        ("train", train, oos_prob_train, n),
        ("test", test, oos_prob_test, t),
    ):
        if probs is not None and np.shape(probs)[0] != size:
            raise DataError(f"oos_prob_{split} has {np.shape(probs)[0]} rows, not {size}")
        if probs is not None:
            frame.update(_label_columns(probs, frame["label"], split, label_threshold, skipped))
        elif size:
            skipped.append(
                f"label_quality ({split}): label issues need the out-of-sample class "
                f"probabilities (oos_prob_{split}), which {source} does not hold"
            )
    return ScoreTables(pd.DataFrame(train), pd.DataFrame(test), skipped, lira, notes)
