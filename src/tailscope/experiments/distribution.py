"""The memorization distribution: histograms, threshold fractions and the extremes.

The paper's first finding is the shape of ``mem`` over a training set: most examples sit
near 0 and a long tail reaches 1 (Feldman & Zhang 2020, Fig. 1). This module summarizes an
(n,) memorization vector into

- a histogram over [0, 1] (18 bins by default, the paper's bin width 1/18 ~ 0.056), overall
  and per class, as fractions of the examples that have an estimate;
- the fraction of examples with ``mem >= theta`` for a few thresholds, overall and per class;
- the indices of the most and the least memorized examples, for a gallery.

Estimates below 0 (noise around a true 0) fall in the first bin and estimates above 1 in
the last; undefined estimates (NaN) are counted apart and left out of every fraction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from tailscope.errors import DataError

__all__ = ["MemorizationDistribution", "extremes", "memorization_distribution"]

#: The paper's histograms split [0, 1] into 18 bins (its first bin is [0, 0.056)).
DEFAULT_BINS = 18
DEFAULT_THRESHOLDS = (0.25, 0.5, 0.75)


@dataclass(frozen=True, eq=False)
class MemorizationDistribution:
    """Summary of an (n,) memorization vector over C classes and B bins.

    Attributes:
        bin_edges: (B + 1,) edges over [0, 1].
        fraction: (B,) fraction of the defined examples in each bin (sums to 1).
        class_fraction: (C, B) the same per class (each row sums to 1, or is 0 for a class
            with no defined example).
        thresholds: (T,) thresholds theta.
        above: (T,) fraction of the defined examples with ``mem >= theta``.
        class_above: (C, T) the same per class (NaN for a class with no defined example).
        class_count: (C,) defined examples per class.
        class_mean: (C,) mean of the defined estimates per class (NaN for an empty class).
        n_defined: examples with an estimate; n_undefined: examples without (NaN).
        mean: mean of the defined estimates.
        mean_se: mean standard error of the defined estimates (NaN if no SE was given).
    """

    bin_edges: np.ndarray
    fraction: np.ndarray
    class_fraction: np.ndarray
    thresholds: np.ndarray
    above: np.ndarray
    class_above: np.ndarray
    class_count: np.ndarray
    class_mean: np.ndarray
    n_defined: int
    n_undefined: int
    mean: float
    mean_se: float

    def above_dict(self) -> dict[str, float]:
        """``{"0.25": fraction, ...}``: the threshold fractions keyed by threshold."""
        return {f"{t:g}": float(f) for t, f in zip(self.thresholds, self.above, strict=True)}


def _check_vector(values: ArrayLike, name: str, n: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise DataError(f"{name} has {len(array)} entries but mem has {n}")
    return array


def _check_labels(
    labels: ArrayLike | None, n: int, n_classes: int | None
) -> tuple[np.ndarray, int]:
    if labels is None:
        return np.zeros(n, dtype=np.int64), 1
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be {n} integers (one per example), got {labels.dtype} {labels.shape}"
        )
    if n == 0:
        return labels.astype(np.int64), n_classes or 1
    if labels.min() < 0:
        raise DataError(f"labels must be >= 0, got {labels.min()}")
    needed = int(labels.max()) + 1
    if n_classes is None:
        n_classes = needed
    elif n_classes < needed:
        raise DataError(f"n_classes={n_classes} but labels go up to {needed - 1}")
    return labels.astype(np.int64), int(n_classes)


def memorization_distribution(
    mem: ArrayLike,
    mem_se: ArrayLike | None = None,
    labels: ArrayLike | None = None,
    *,
    n_classes: int | None = None,
    bins: int = DEFAULT_BINS,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> MemorizationDistribution:
    """Histogram and threshold fractions of ``mem``, overall and per class.

    Args:
        mem: (n,) memorization estimates; NaN where undefined.
        mem_se: (n,) their standard errors (optional; only their mean is reported).
        labels: (n,) integer class of every example (optional; default one class).
        n_classes: number of classes C (default ``max(labels) + 1``).
        bins: number of equal bins over [0, 1]; values outside are clipped into the end bins.
        thresholds: the thetas of the ``mem >= theta`` fractions.
    """
    mem = _check_vector(mem, "mem")
    se = None if mem_se is None else _check_vector(mem_se, "mem_se", len(mem))
    labels, n_classes = _check_labels(labels, len(mem), n_classes)
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise DataError(f"bins must be a positive integer, got {bins!r}")
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)

    defined = ~np.isnan(mem)
    values, classes = mem[defined], labels[defined]
    edges = np.linspace(0.0, 1.0, bins + 1)
    bin_of = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
    counts = np.zeros((n_classes, bins), dtype=np.int64)
    np.add.at(counts, (classes, bin_of), 1)
    class_count = counts.sum(axis=1)
    hits = np.stack([np.bincount(classes, values >= t, n_classes) for t in thresholds], axis=1)
    hits = hits.reshape(n_classes, len(thresholds))
    n_defined = int(defined.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        class_fraction = np.where(class_count[:, None] > 0, counts / class_count[:, None], 0.0)
        class_above = hits / class_count[:, None]
        class_mean = np.bincount(classes, values, n_classes) / class_count
    return MemorizationDistribution(
        bin_edges=edges,
        fraction=counts.sum(axis=0) / max(n_defined, 1),
        class_fraction=class_fraction,
        thresholds=thresholds,
        above=hits.sum(axis=0) / n_defined if n_defined else np.full(len(thresholds), np.nan),
        class_above=class_above,
        class_count=class_count,
        class_mean=class_mean,
        n_defined=n_defined,
        n_undefined=len(mem) - n_defined,
        mean=float(values.mean()) if n_defined else float("nan"),
        mean_se=float(np.nanmean(se[defined])) if se is not None and n_defined else float("nan"),
    )


def extremes(mem: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``k`` most and the ``k`` least memorized examples.

    Returns ``(most, least)``: ``most`` by decreasing ``mem``, ``least`` by increasing
    ``mem``, ties broken by position; undefined (NaN) estimates are never chosen.
    """
    mem = _check_vector(mem, "mem")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise DataError(f"k must be a non-negative integer, got {k!r}")
    defined = np.flatnonzero(~np.isnan(mem))
    order = defined[np.argsort(mem[defined], kind="stable")]
    most = defined[np.argsort(-mem[defined], kind="stable")][:k]
    return most, order[:k]
