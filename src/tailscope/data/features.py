"""Scaling raw features into what a network trains on.

Users hand over raw data; tailscope scales it so a built-in recipe trains sensibly on any of
it, and records which scaling it used in the run's spec:

- ``"auto"``: uint8 (and bool) inputs are divided by 255 (to [0, 1]); any other dtype is
  standardized per feature with the train split's mean and standard deviation.
- ``"unit"``: divide by 255 whatever the dtype.
- ``"standardize"``: per-feature ``(x - mean_train) / std_train`` (std 0 treated as 1).
- ``"none"``: cast to float32 only.
"""

from __future__ import annotations

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.errors import DataError

__all__ = ["SCALINGS", "features", "resolve_scaling"]

SCALINGS = ("auto", "unit", "standardize", "none")


def resolve_scaling(dataset: Dataset, scaling: str = "auto") -> str:
    """The concrete scaling ``"auto"`` stands for on this dataset."""
    if scaling not in SCALINGS:
        raise DataError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    if scaling != "auto":
        return scaling
    return "unit" if dataset.x_train.dtype in (np.uint8, np.bool_) else "standardize"


def features(dataset: Dataset, scaling: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Scaled float32 ``(x_train, x_test)``, shapes unchanged: (n, *shape) and (t, *shape)."""
    how = resolve_scaling(dataset, scaling)
    if how == "unit":  # one pass each, the same values as a cast then a division
        return tuple(
            np.divide(x, np.float32(255.0), dtype=np.float32)
            for x in (dataset.x_train, dataset.x_test)
        )
    xtr = dataset.x_train.astype(np.float32)
    xte = dataset.x_test.astype(np.float32)
    if how == "standardize":
        mean = xtr.mean(axis=0, dtype=np.float64)
        std = xtr.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0
        xtr = ((xtr - mean) / std).astype(np.float32)
        xte = ((xte - mean) / std).astype(np.float32)
    return xtr, xte
