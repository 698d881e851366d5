"""C-scores (Jiang et al. 2021, "Characterizing Structural Regularities of Labeled Data in
Overparameterized Models"), and the check against the authors' released MNIST scores.

The C-score of an example is its expected accuracy under models trained on random subsets
that leave it out, integrated over the subset ratio. With R ratios r_1..r_R (a multi-ratio
run: 0.1, 0.2, ..., 0.9 in the authors' MNIST release) and the per-ratio held-out accuracy
``acc_r`` of :mod:`tailscope.scores.heldout`::

    cscore[i] = (1/R) sum_r acc_r[i],   se[i] = sqrt(sum_r se_r[i]**2) / R

(the ratios' models are independent, so their variances add). An example that no model of
some ratio held out has no C-score (NaN): dropping that ratio would bias the average.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from tailscope.errors import DataError, DatasetNotAvailableError
from tailscope.scores._checks import check_labels, warn_undefined
from tailscope.scores.heldout import HeldOutAccuracy, heldout_accuracy

__all__ = ["compare_cscores", "cscore", "cscore_from_heldout", "load_released_cscores"]


def cscore_from_heldout(held: HeldOutAccuracy) -> tuple[np.ndarray, np.ndarray]:
    """``(cscore, se)``, float64 (n,), from per-ratio held-out accuracies (see module doc)."""
    if len(held.ratios) == 0:
        raise DataError("the C-score needs the subset ratio of every model (ratios)")
    acc, se = held.ratio_accuracy, held.ratio_se
    score = acc.mean(axis=0)  # NaN wherever a ratio is NaN
    score_se = np.sqrt((se**2).sum(axis=0)) / len(held.ratios)
    undefined = np.isnan(score) & ~np.isnan(held.accuracy)
    warn_undefined(
        int(np.count_nonzero(undefined)),
        len(score),
        "C-score",
        "were in the subset of every model of some ratio",
    )
    return score, score_se


def cscore(
    correct: ArrayLike,
    ratios: ArrayLike,
    masks: ArrayLike | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """C-score of every example and its standard error.

    Args:
        correct: (K, n) bool or 0/1 correctness of each model on each example.
        ratios: (K,) subset ratio of each model; the score averages over its distinct values.
        masks: (K, n) subset membership for train examples; None for test examples.
        chunk_size: examples per chunk, as in :func:`~tailscope.scores.heldout_accuracy`.

    Returns:
        ``(cscore, se)``, float64 (n,), NaN where some ratio has no held-out model.
    """
    held = heldout_accuracy(correct, masks, ratios, chunk_size=chunk_size)
    return cscore_from_heldout(held)


def load_released_cscores(path: str | os.PathLike, labels: ArrayLike | None = None) -> np.ndarray:
    """The authors' released C-scores from an ``.npz`` with keys ``scores`` and ``labels``.

    With ``labels`` (the dataset's train labels, same order) the file's labels must match
    them exactly, which checks that both are in the same order. Returns float64 (n,).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotAvailableError(f"released C-score file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("scores", "labels") if key in npz.files}
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable .npz file: {err}") from None
    if len(arrays) < 2:
        raise DataError(f"{path}: a C-score file holds the keys 'scores' and 'labels'")
    scores, released_labels = arrays["scores"], arrays["labels"]
    if scores.ndim != 1 or scores.shape != released_labels.shape:
        raise DataError(
            f"{path}: scores and labels must be 1-D of equal length, got "
            f"{scores.shape} and {released_labels.shape}"
        )
    if not np.issubdtype(scores.dtype, np.floating):
        raise DataError(f"{path}: scores must hold floats, not {scores.dtype}")
    released_labels = check_labels(released_labels, len(scores), f"{path}: labels")
    if labels is not None:
        labels = check_labels(labels, len(scores), "labels")
        wrong = np.flatnonzero(labels != released_labels)
        if len(wrong):
            raise DataError(
                f"{path}: {len(wrong)} of {len(scores)} labels differ from the dataset's "
                f"(first at position {wrong[0]}): the files are not in the same order"
            )
    return scores.astype(np.float64)


def compare_cscores(ours: ArrayLike, released: ArrayLike, tail: float = 0.9) -> dict:
    """Agreement of our C-scores with released ones, over the examples where ours is defined.

    Returns a dict: ``pearson`` (over all), ``n`` (examples compared), ``n_undefined``
    (ours NaN), ``tail``, ``spearman_tail`` (rank correlation over the tail, the examples
    whose released score is below ``tail``) and ``n_tail``. A correlation over fewer than
    3 examples is NaN.
    """
    ours = np.asarray(ours, dtype=np.float64)
    released = np.asarray(released, dtype=np.float64)
    if ours.ndim != 1 or ours.shape != released.shape:
        raise DataError(
            f"ours and released must be 1-D of equal length, got {ours.shape} and {released.shape}"
        )
    if not np.isfinite(released).all():
        raise DataError("released contains NaN or infinite values")
    defined = ~np.isnan(ours)
    in_tail = defined & (released < tail)

    def correlation(fn, a: np.ndarray, b: np.ndarray) -> float:
        if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return float("nan")
        return float(fn(a, b).statistic)

    return {
        "pearson": correlation(_stats().pearsonr, ours[defined], released[defined]),
        "n": int(defined.sum()),
        "n_undefined": int((~defined).sum()),
        "tail": float(tail),
        "spearman_tail": correlation(_stats().spearmanr, ours[in_tail], released[in_tail]),
        "n_tail": int(in_tail.sum()),
    }


def _stats():
    """``scipy.stats``, imported on first use (~0.5 s)."""
    from scipy import stats

    return stats
