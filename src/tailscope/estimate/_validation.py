"""Input checks shared by the estimators, and the warning for undefined estimates.

The estimators take a (K, n) mask matrix and a (K, n) or (K, t) correctness matrix, either of
which may be a memory-mapped ``.npy`` far larger than RAM. The shape and dtype checks here
never read the data; the value check (:func:`as_bool`) runs on one column chunk at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from tailscope.errors import DataError

__all__ = [
    "UndefinedEstimateWarning",
    "as_bool",
    "as_matrix",
    "check_binary",
    "check_chunk_size",
    "check_like_masks",
    "check_same_models",
    "column_chunks",
    "warn_undefined",
]


class UndefinedEstimateWarning(RuntimeWarning):
    """Some train examples were in every subset or in none, so they have no estimate (NaN)."""


def as_matrix(array: object, name: str) -> np.ndarray:
    """Return ``array`` as a 2-D numpy array of booleans or numbers, without copying a memmap."""
    if not isinstance(array, np.ndarray):
        array = np.asarray(array)
    if array.ndim != 2:
        raise DataError(f"{name} must be 2-D (n_models, n_examples) but has shape {array.shape}")
    if array.size == 0:
        raise DataError(f"{name} is empty (shape {array.shape})")
    if not (array.dtype == np.bool_ or np.issubdtype(array.dtype, np.number)):
        raise DataError(f"{name} must hold booleans or 0/1 numbers, not {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{name} must hold booleans or 0/1 numbers, not {array.dtype}")
    return array


def check_same_models(masks: np.ndarray, other: np.ndarray, other_name: str) -> None:
    """Both matrices must have one row per model, and there must be at least two models."""
    if other.shape[0] != masks.shape[0]:
        raise DataError(
            f"{other_name} has {other.shape[0]} rows (models) but masks has {masks.shape[0]}"
        )
    if masks.shape[0] < 2:
        raise DataError(
            f"masks must hold at least 2 models (rows) to compare in- and out-of-subset "
            f"models, got {masks.shape[0]}"
        )


def check_like_masks(masks: np.ndarray, other: np.ndarray, other_name: str) -> None:
    """``other`` must be (n_models, n_train) like ``masks``, with at least two models."""
    check_same_models(masks, other, other_name)
    if other.shape != masks.shape:
        raise DataError(
            f"{other_name} has shape {other.shape} but masks has shape {masks.shape}; "
            "both must be (n_models, n_train)"
        )


def check_chunk_size(chunk_size: object) -> int:
    """``chunk_size`` must be a positive integer."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise DataError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def column_chunks(n_columns: int, chunk_size: int) -> Iterator[slice]:
    """Consecutive column slices of at most ``chunk_size`` columns covering ``[0, n_columns)``."""
    for start in range(0, n_columns, chunk_size):
        yield slice(start, min(start + chunk_size, n_columns))


def as_bool(chunk: np.ndarray, name: str) -> np.ndarray:
    """Return a chunk of ``name`` as booleans; it must hold only 0 and 1 (or booleans)."""
    chunk = np.asarray(chunk)
    if chunk.dtype == np.bool_:
        return chunk
    if np.issubdtype(chunk.dtype, np.floating) and np.isnan(chunk).any():
        raise DataError(f"{name} contains NaN")
    if not ((chunk == 0) | (chunk == 1)).all():
        raise DataError(f"{name} must hold only 0 and 1 (or booleans)")
    return chunk.astype(bool)


def check_binary(array: np.ndarray, name: str, chunk_size: int) -> None:
    """Check, one column chunk at a time, that ``array`` holds only 0/1 values."""
    if array.dtype == np.bool_:
        return
    for columns in column_chunks(array.shape[1], chunk_size):
        as_bool(array[:, columns], name)


def warn_undefined(n_undefined: int, n_total: int, what: str) -> None:
    """Warn once that ``n_undefined`` of ``n_total`` train examples have no estimate."""
    if n_undefined:
        warnings.warn(
            f"{n_undefined} of {n_total} train examples were in every subset or in none; "
            f"their {what} is undefined (NaN)",
            UndefinedEstimateWarning,
            stacklevel=3,
        )
