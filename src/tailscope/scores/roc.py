"""ROC summaries of a membership attack: AUC, TPR at low FPR, and a curve for log-log axes.

An attack gives every (target model, example) pair a score, higher meaning "member". With
P positive (member) and N negative scores, the attack that says "member" when the score is
above a threshold v has ``FPR(v) = #{neg > v} / N`` and ``TPR(v) = #{pos > v} / P``.

- ``auc = P(pos > neg) + P(pos = neg) / 2`` (Mann-Whitney), with the Hanley-McNeil SE.
- TPR at FPR alpha: the threshold ``v`` with the largest ``FPR(v) <= alpha``, as Carlini et al.
  report (no randomized thresholds); its TPR is what the attack achieves at that FPR.
- the curve: that TPR at ``n_points`` FPRs spaced logarithmically from 1/N to 1, with the
  FPR each threshold actually attains, for a plot on log-log axes (as in the LiRA paper).

Sorting P + N float32 scores is the cost; nothing of size P x N is formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from tailscope.errors import DataError

__all__ = ["Roc", "hanley_mcneil_se", "roc", "roc_from_scores", "threshold_at_fpr"]

# Positives are located in the sorted negatives this many at a time (bounded temporaries).
_BLOCK = 2**22


@dataclass(frozen=True, eq=False)
class Roc:
    """ROC summary of scores for P positives and N negatives.

    Attributes:
        auc: area under the ROC curve (ties count 1/2); ``auc_se`` its Hanley-McNeil SE.
        fprs: (F,) the FPRs asked for; ``tprs`` (F,) the TPR at the largest FPR <= each.
        fpr, tpr: (M,) the curve, FPR increasing, from log-spaced FPR targets (for plots).
        n_pos, n_neg: counts of positive and negative scores.
    """

    auc: float
    auc_se: float
    fprs: np.ndarray
    tprs: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray
    n_pos: int
    n_neg: int

    def tpr_at(self, fpr: float) -> float:
        """TPR at one of the FPRs this summary was computed for."""
        hits = np.flatnonzero(np.isclose(self.fprs, fpr, rtol=1e-9, atol=0))
        if not len(hits):
            raise DataError(f"fpr {fpr:g} is not one of {list(self.fprs)}")
        return float(self.tprs[hits[0]])


def threshold_at_fpr(neg_sorted: np.ndarray, alpha: float) -> float:
    """The smallest threshold v with ``#{neg > v} <= alpha N`` (``-inf`` when alpha >= 1)."""
    n = len(neg_sorted)
    allowed = int(np.floor(alpha * n + 1e-9))
    if allowed >= n:
        return -np.inf
    return float(neg_sorted[n - allowed - 1])


def _above(sorted_values: np.ndarray, v: float) -> int:
    # v in the array's own dtype: a float64 scalar would make numpy convert the whole array.
    v = sorted_values.dtype.type(v)
    return len(sorted_values) - int(np.searchsorted(sorted_values, v, side="right"))


def _auc(pos_sorted: np.ndarray, neg_sorted: np.ndarray) -> float:
    below = 0
    ties = 0
    for start in range(0, len(pos_sorted), _BLOCK):
        block = pos_sorted[start : start + _BLOCK]
        left = np.searchsorted(neg_sorted, block, side="left")
        right = np.searchsorted(neg_sorted, block, side="right")
        below += int(left.sum(dtype=np.int64))
        ties += int((right - left).sum(dtype=np.int64))
    return (below + 0.5 * ties) / (len(pos_sorted) * len(neg_sorted))


def hanley_mcneil_se(auc: ArrayLike, n_pos: ArrayLike, n_neg: ArrayLike) -> np.ndarray:
    """Hanley & McNeil's (1982) standard error of an AUC from ``n_pos`` and ``n_neg`` scores,
    broadcast over the inputs (float64; NaN where a count is 0)."""
    auc, n_pos, n_neg = (np.asarray(a, dtype=np.float64) for a in (auc, n_pos, n_neg))
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
            n_pos * n_neg
        )
    return np.sqrt(np.maximum(var, 0.0))


def roc(
    pos: ArrayLike,
    neg: ArrayLike,
    fprs: Sequence[float] = (0.001, 0.01),
    *,
    n_points: int = 200,
    presorted: bool = False,
) -> Roc:
    """ROC summary of positive scores ``pos`` (P,) against negative scores ``neg`` (N,).

    ``presorted=True`` promises both are sorted increasing (saves the sort). Scores must be
    finite; see the module docstring for the definitions.
    """
    pos = np.asarray(pos).ravel()
    neg = np.asarray(neg).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise DataError(f"an ROC needs positives and negatives, got {len(pos)} and {len(neg)}")
    if not presorted:
        pos, neg = np.sort(pos), np.sort(neg)
    if not (np.isfinite(pos[[0, -1]]).all() and np.isfinite(neg[[0, -1]]).all()):
        raise DataError("ROC scores must be finite")
    fprs = np.asarray(fprs, dtype=np.float64)
    if fprs.ndim != 1 or ((fprs < 0) | (fprs > 1)).any():
        raise DataError(f"fprs must be FPRs in [0, 1], got {fprs}")
    n_pos, n_neg = len(pos), len(neg)

    def tpr_fpr(alpha: float) -> tuple[float, float]:
        v = threshold_at_fpr(neg, alpha)
        return _above(pos, v) / n_pos, _above(neg, v) / n_neg

    tprs = np.array([tpr_fpr(a)[0] for a in fprs])
    grid = np.concatenate([[0.0], np.logspace(np.log10(1.0 / n_neg), 0, max(n_points, 2))])
    curve = np.array([tpr_fpr(a) for a in grid])
    curve = np.unique(curve[:, ::-1], axis=0)  # (fpr, tpr) pairs, sorted by FPR
    auc = _auc(pos, neg)
    return Roc(
        auc=auc,
        auc_se=float(hanley_mcneil_se(auc, n_pos, n_neg)),
        fprs=fprs,
        tprs=tprs,
        fpr=curve[:, 0],
        tpr=curve[:, 1],
        n_pos=n_pos,
        n_neg=n_neg,
    )


def roc_from_scores(
    scores: ArrayLike, is_positive: ArrayLike, fprs: Sequence[float] = (0.001, 0.01), **kwargs
) -> Roc:
    """:func:`roc` from one array of scores and a same-shape boolean array of labels."""
    scores = np.asarray(scores)
    is_positive = np.asarray(is_positive)
    if scores.shape != is_positive.shape or is_positive.dtype != np.bool_:
        raise DataError(
            f"is_positive must be a boolean array of the shape of scores {scores.shape}, "
            f"got {is_positive.dtype} {is_positive.shape}"
        )
    return roc(scores[is_positive], scores[~is_positive], fprs, **kwargs)
