"""Input checks shared by the per-example scores.

The (K, n) arrays may be memory-mapped ``.npy`` files larger than RAM: the shape checks here
never read them, and the value checks run on one column chunk at a time, inside the scores'
own loops. Every error is a :class:`~tailscope.errors.DataError` naming the argument.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from tailscope.errors import DataError
from tailscope.estimate._validation import (
    UndefinedEstimateWarning,
    as_bool,
    as_matrix,
    check_chunk_size,
    column_chunks,
)

__all__ = [
    "as_bool",
    "as_float_chunk",
    "as_matrix",
    "check_labels",
    "check_probabilities",
    "check_ratios",
    "check_shape",
    "chunk_columns",
    "column_chunks",
    "warn_undefined",
]

# About 2**24 entries of a (K, n) array per column chunk, as the estimators do.
CHUNK_ENTRIES = 2**24


def chunk_columns(n_rows: int, chunk_size: int | None, entries: int = CHUNK_ENTRIES) -> int:
    """Columns per chunk: ``chunk_size`` if given (checked), else about ``entries / n_rows``."""
    if chunk_size is None:
        return max(1, entries // max(n_rows, 1))
    return check_chunk_size(chunk_size)


def check_shape(array: np.ndarray, name: str, shape: tuple[int, ...], like: str) -> None:
    """``array`` must have ``shape`` (that of the argument named ``like``)."""
    if array.shape != shape:
        raise DataError(f"{name} has shape {array.shape} but {like} has shape {shape}")


def as_float_chunk(chunk: np.ndarray, name: str) -> np.ndarray:
    """A chunk of a float argument (e.g. ``phi``) as float64; NaN or infinity is an error."""
    if not np.issubdtype(chunk.dtype, np.floating) and not np.issubdtype(chunk.dtype, np.integer):
        raise DataError(f"{name} must hold floats, not {chunk.dtype}")
    values = np.asarray(chunk, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return values


def check_ratios(ratios: ArrayLike, n_models: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate per-model subset ratios; returns ``(levels, group)``.

    ``levels`` (R,) are the distinct ratios in increasing order and ``group`` (K,) int64 the
    level of each model. Ratios equal to 1e-9 are one level (float noise from a store).
    """
    values = np.asarray(ratios)
    if values.ndim != 1 or len(values) != n_models:
        raise DataError(f"ratios must have shape ({n_models},) (one per model), got {values.shape}")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise DataError(f"ratios must hold floats, not {values.dtype}")
    values = values.astype(np.float64)
    if not np.isfinite(values).all() or (values <= 0).any() or (values >= 1).any():
        raise DataError("ratios must lie strictly between 0 and 1")
    levels, group = np.unique(np.round(values, 9), return_inverse=True)
    return levels, group.astype(np.int64)


def check_labels(labels: ArrayLike, n: int, name: str, n_classes: int | None = None) -> np.ndarray:
    """1-D integer labels of length ``n`` (in ``[0, n_classes)`` if given), as int64."""
    values = np.asarray(labels)
    if values.ndim != 1 or len(values) != n:
        raise DataError(f"{name} must have shape ({n},), got {values.shape}")
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
        if np.issubdtype(values.dtype, np.floating) and np.all(np.mod(values, 1) == 0):
            values = values.astype(np.int64)
        else:
            raise DataError(f"{name} must hold integer class labels, not {values.dtype}")
    if len(values) and values.min() < 0:
        raise DataError(f"{name} must hold non-negative class labels, got {values.min()}")
    if n_classes is not None and len(values) and values.max() >= n_classes:
        raise DataError(
            f"{name} holds class {values.max()} but the probabilities have {n_classes} classes"
        )
    return values.astype(np.int64)


def check_probabilities(probs: ArrayLike, name: str, atol: float = 1e-2) -> np.ndarray:
    """(n, C) class probabilities as float64, each row renormalized to sum to 1.

    A row of NaN (an example no model held out, so it has no out-of-sample probabilities)
    stays NaN. Anything else must be finite, non-negative, with rows summing to 1 within
    ``atol`` (means of float16 softmax vectors are not exact).
    """
    values = np.asarray(probs)
    if values.ndim != 2 or values.shape[1] < 2:
        raise DataError(f"{name} must be 2-D (n_examples, n_classes >= 2), got {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise DataError(f"{name} must hold floats, not {values.dtype}")
    values = values.astype(np.float64)
    undefined = np.isnan(values).all(axis=1)
    rows = values[~undefined]
    if not np.isfinite(rows).all():
        raise DataError(f"{name} contains NaN or infinite values outside all-NaN rows")
    if (rows < 0).any():
        raise DataError(f"{name} contains negative probabilities")
    sums = rows.sum(axis=1)
    bad = np.abs(sums - 1) > atol
    if bad.any():
        first = int(np.flatnonzero(~undefined)[np.argmax(bad)])
        raise DataError(
            f"{name} rows must sum to 1 (within {atol:g}); {int(bad.sum())} do not, "
            f"e.g. row {first} sums to {sums[np.argmax(bad)]:.4g}"
        )
    values[~undefined] = rows / sums[:, None]
    return values


def warn_undefined(n_undefined: int, n_total: int, what: str, why: str) -> None:
    """Warn once that ``n_undefined`` of ``n_total`` examples have no ``what`` (NaN)."""
    if n_undefined:
        warnings.warn(
            f"{n_undefined} of {n_total} examples {why}; their {what} is undefined (NaN)",
            UndefinedEstimateWarning,
            stacklevel=3,
        )
