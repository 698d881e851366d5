"""Held-out accuracy of every example (Data-OOB, Kwon & Zou 2023), pooled and per subset ratio.

For K models, ``correct[k, i]`` says whether model k classifies example i correctly and
``masks[k, i]`` whether i was in model k's training subset. The held-out accuracy of i is
the mean correctness over the models that did not train on it::

    acc[i] = mean_k(correct[k, i] | not masks[k, i]),   se[i] = sqrt(acc (1 - acc) / K_out[i])

(the plug-in standard error of a proportion; 0 where acc is 0 or 1, NaN where K_out = 0).
Test examples are held out by every model: pass ``masks=None``.

In a multi-ratio run (``ratios[k]`` = model k's subset ratio) the same estimate is also made
per ratio r over the models of that ratio: ``acc_r[i]``, ``se_r[i]``, ``K_out_r[i]``. The
pooled ``acc`` then mixes the ratios in proportion to their held-out models, as Data-OOB does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from tailscope.estimate._validation import check_like_masks
from tailscope.scores._checks import (
    as_bool,
    as_matrix,
    check_ratios,
    chunk_columns,
    column_chunks,
    warn_undefined,
)

__all__ = ["HeldOutAccuracy", "heldout_accuracy", "proportion_se"]


def proportion_se(p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``sqrt(p (1 - p) / k)`` in float64, NaN where ``k`` is 0."""
    p, k = np.asarray(p, dtype=np.float64), np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k > 0, np.sqrt(p * (1.0 - p) / k), np.nan)


@dataclass(frozen=True, eq=False)
class HeldOutAccuracy:
    """Held-out accuracy of n examples, pooled over all models and per subset ratio.

    Attributes:
        accuracy: (n,) mean correctness over the models that did not train on the example.
        se: (n,) its plug-in standard error.
        k_out: (n,) int64, how many models did not train on it (NaN estimates where 0).
        ratios: (R,) the distinct subset ratios, increasing; empty without ``ratios``.
        ratio_accuracy: (R, n) the held-out accuracy over the models of each ratio.
        ratio_se: (R, n) its standard error.
        ratio_k_out: (R, n) int64, held-out models of each ratio.
    """

    accuracy: np.ndarray
    se: np.ndarray
    k_out: np.ndarray
    ratios: np.ndarray
    ratio_accuracy: np.ndarray
    ratio_se: np.ndarray
    ratio_k_out: np.ndarray


def heldout_accuracy(
    correct: ArrayLike,
    masks: ArrayLike | None = None,
    ratios: ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
) -> HeldOutAccuracy:
    """Held-out accuracy of every example, with its standard error, pooled and per ratio.

    Args:
        correct: (K, n) bool or 0/1, model k classifies example i correctly (may be a memmap).
        masks: (K, n) bool or 0/1, example i was in model k's subset; None for test examples
            (no model trained on them).
        ratios: (K,) subset ratio of each model, for the per-ratio estimates; None for one.
        chunk_size: examples (columns) per chunk; by default about 2**24 / K.

    Returns:
        A :class:`HeldOutAccuracy`. An example that every model trained on has NaN estimates,
        and one :class:`~tailscope.estimate.UndefinedEstimateWarning` says how many.
    """
    correct = as_matrix(correct, "correct")
    n_models, n = correct.shape
    if masks is not None:
        masks = as_matrix(masks, "masks")
        check_like_masks(masks, correct, "correct")
    if ratios is None:
        levels, group = np.empty(0), np.zeros(n_models, dtype=np.int64)
    else:
        levels, group = check_ratios(ratios, n_models)
    n_groups = max(len(levels), 1)
    # One-hot (R, K): a float32 matrix product sums each ratio's rows exactly (counts < 2**24).
    onehot = np.zeros((n_groups, n_models), dtype=np.float32)
    onehot[group, np.arange(n_models)] = 1.0

    k_out = np.empty((n_groups, n), dtype=np.int64)
    hits = np.empty((n_groups, n), dtype=np.int64)
    for cols in column_chunks(n, chunk_columns(n_models, chunk_size)):
        right = as_bool(correct[:, cols], "correct")
        if masks is None:
            held = np.ones(right.shape, dtype=bool)
        else:
            held = ~as_bool(masks[:, cols], "masks")
        k_out[:, cols] = onehot @ held.astype(np.float32)
        hits[:, cols] = onehot @ (held & right).astype(np.float32)

    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_accuracy = np.where(k_out > 0, hits / k_out, np.nan)
        total_out = k_out.sum(axis=0)
        accuracy = np.where(total_out > 0, hits.sum(axis=0) / total_out, np.nan)
    warn_undefined(
        int(np.count_nonzero(total_out == 0)), n, "held-out accuracy", "were in every subset"
    )
    if len(levels) == 0:
        ratio_accuracy, k_out = np.empty((0, n)), np.empty((0, n), dtype=np.int64)
    return HeldOutAccuracy(
        accuracy=accuracy,
        se=proportion_se(accuracy, total_out),
        k_out=total_out,
        ratios=levels.astype(np.float64),
        ratio_accuracy=ratio_accuracy,
        ratio_se=proportion_se(ratio_accuracy, k_out),
        ratio_k_out=k_out,
    )
