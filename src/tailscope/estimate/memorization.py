"""Held-out memorization estimates and their standard errors (Feldman & Zhang 2020, eq. 2).

For K models, ``masks[k, i]`` says whether train example i was in model k's subset and
``correct[k, i]`` whether model k classifies it correctly. Memorization is a difference of
two sample means::

    mem[i] = mean_k(correct[k, i] | masks[k, i]) - mean_k(correct[k, i] | not masks[k, i])

Both means are proportions of 0/1 values, so the standard error of the difference is
``sqrt(p_in (1 - p_in) / K_in + p_out (1 - p_out) / K_out)``. A finding needs more than an
estimate: :func:`memorization` also gives the one-sided exact Fisher p-value of ``mem > 0``,
its Benjamini-Hochberg q-value over the n examples, and a confidence interval
(Agresti-Caffo), which covers where the plug-in SE (0 at rates 0 or 1) does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from tailscope.estimate._validation import (
    as_bool,
    as_matrix,
    check_chunk_size,
    check_like_masks,
    column_chunks,
    warn_undefined,
)
from tailscope.estimate.fdr import bh_qvalues
from tailscope.estimate.intervals import difference_interval
from tailscope.estimate.significance import fisher_pvalues

__all__ = [
    "MemorizationResult",
    "difference_of_means",
    "memorization",
    "memorization_counts",
    "standard_error",
]

# Column chunks of about 2**24 mask entries (16 MB of booleans) keep memory bounded and the
# per-chunk temporaries inside the CPU caches' reach, at no cost in speed.
_CHUNK_ENTRIES = 2**24


def standard_error(p_in: ArrayLike, k_in: ArrayLike, p_out: ArrayLike, k_out: ArrayLike):
    """Standard error of a difference of two sample means of 0/1 values.

    ``sqrt(p_in (1 - p_in) / k_in + p_out (1 - p_out) / k_out)``, broadcast over the inputs,
    in float64; NaN where ``k_in`` or ``k_out`` is 0. Scalars in give a numpy scalar out.
    """
    p_in, k_in, p_out, k_out = (np.asarray(x, dtype=np.float64) for x in (p_in, k_in, p_out, k_out))
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = p_in * (1.0 - p_in) / k_in + p_out * (1.0 - p_out) / k_out
        se = np.where((k_in > 0) & (k_out > 0), np.sqrt(variance), np.nan)
    return se[()]


def difference_of_means(
    hits_in: ArrayLike, k_in: ArrayLike, hits_out: ArrayLike, k_out: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """``(p_in - p_out, se)`` from counts, with ``p_in = hits_in / k_in``, float64.

    NaN estimate and NaN standard error where ``k_in`` or ``k_out`` is 0.
    """
    hits_in, k_in, hits_out, k_out = (
        np.asarray(x, dtype=np.float64) for x in (hits_in, k_in, hits_out, k_out)
    )
    defined = (k_in > 0) & (k_out > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_in = hits_in / k_in
        p_out = hits_out / k_out
        estimate = np.where(defined, p_in - p_out, np.nan)
    return estimate, standard_error(p_in, k_in, p_out, k_out)


def memorization_counts(
    masks: ArrayLike, correct_train: ArrayLike, *, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The counts behind :func:`memorization`: ``(hits_in, k_in, hits_out, k_out)``, int64 (n,).

    ``k_in[i]`` models had example i in their subset and ``hits_in[i]`` of them classify it
    correctly; ``k_out``/``hits_out`` likewise for the models that did not train on it.
    Arguments as for :func:`memorization`.
    """
    masks = as_matrix(masks, "masks")
    correct_train = as_matrix(correct_train, "correct_train")
    check_like_masks(masks, correct_train, "correct_train")
    n_models, n_train = masks.shape
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ENTRIES // n_models)
    chunk_size = check_chunk_size(chunk_size)

    k_in = np.empty(n_train, dtype=np.int64)
    hits_in = np.empty(n_train, dtype=np.int64)
    hits = np.empty(n_train, dtype=np.int64)
    for columns in column_chunks(n_train, chunk_size):
        # Summing uint8 views into int32 is ~2x faster than np.count_nonzero(axis=0).
        in_subset = as_bool(masks[:, columns], "masks").view(np.uint8)
        correct = as_bool(correct_train[:, columns], "correct_train").view(np.uint8)
        k_in[columns] = in_subset.sum(axis=0, dtype=np.int32)
        hits_in[columns] = (in_subset & correct).sum(axis=0, dtype=np.int32)
        hits[columns] = correct.sum(axis=0, dtype=np.int32)
    return hits_in, k_in, hits - hits_in, n_models - k_in


@dataclass(frozen=True, eq=False)
class MemorizationResult:
    """Memorization of n train examples, with what makes an estimate a finding.

    Attributes:
        value: (n,) float64 ``mem``, NaN where undefined (in every subset or in none).
        se: (n,) standard error (plug-in; 0 where both rates are 0 or 1).
        p: (n,) one-sided exact Fisher p-value of ``mem > 0``.
        q: (n,) Benjamini-Hochberg (or -Yekutieli) q-value over the defined examples.
        low, high: (n,) confidence interval at ``confidence`` (Agresti-Caffo).
        hits_in, k_in, hits_out, k_out: (n,) int64 counts behind every estimate.
        confidence: the intervals' level; method: ``"bh"`` or ``"by"``.
    """

    value: np.ndarray
    se: np.ndarray
    p: np.ndarray
    q: np.ndarray
    low: np.ndarray
    high: np.ndarray
    hits_in: np.ndarray
    k_in: np.ndarray
    hits_out: np.ndarray
    k_out: np.ndarray
    confidence: float = 0.95
    method: str = "bh"

    def findings(self, fdr: float = 0.1, at_least: float = -np.inf) -> np.ndarray:
        """(n,) bool: the examples with ``q <= fdr`` (``mem > 0`` declared) and
        ``mem >= at_least``."""
        with np.errstate(invalid="ignore"):
            return (self.q <= fdr) & (self.value >= at_least)

    def to_frame(self, index: ArrayLike | None = None, labels: ArrayLike | None = None):
        """One row per example: ``index``, ``label`` (when given), ``mem``, ``mem_se``,
        ``mem_low``, ``mem_high``, ``mem_p``, ``mem_q``."""
        columns = {} if index is None else {"index": np.asarray(index)}
        if labels is not None:
            columns["label"] = np.asarray(labels)
        columns |= {
            "mem": self.value,
            "mem_se": self.se,
            "mem_low": self.low,
            "mem_high": self.high,
            "mem_p": self.p,
            "mem_q": self.q,
        }
        return pd.DataFrame(columns)


def memorization(
    masks: ArrayLike,
    correct_train: ArrayLike,
    *,
    chunk_size: int | None = None,
    confidence: float = 0.95,
    method: str = "bh",
) -> MemorizationResult:
    """Memorization of every train example: estimate, SE, p- and q-value, interval.

    Args:
        masks: (K, n) bool or 0/1, ``masks[k, i]`` = example i was in model k's subset.
            May be a memory-mapped array; it is read one column chunk at a time.
        correct_train: (K, n) bool or 0/1, model k classifies train example i correctly.
        chunk_size: train examples (columns) per chunk; by default about 2**24 / K.
        confidence: level of the intervals.
        method: ``"bh"`` or ``"by"`` for the q-values.

    Returns:
        A :class:`MemorizationResult`. An example that was in every subset or in none is NaN
        throughout, and one :class:`UndefinedEstimateWarning` says how many there were.
    """
    counts = memorization_counts(masks, correct_train, chunk_size=chunk_size)
    value, se = difference_of_means(*counts)
    warn_undefined(int(np.count_nonzero(np.isnan(value))), len(value), "memorization")
    p = fisher_pvalues(*counts)
    low, high = difference_interval(*counts, confidence=confidence)
    return MemorizationResult(
        value, se, p, bh_qvalues(p, method), low, high, *counts, confidence, method
    )
