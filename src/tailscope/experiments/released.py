"""The paper's released high-influence pairs (CIFAR-100, ImageNet).

The authors released, for each dataset, the pairs they selected (``infl >= 0.15``,
``mem >= 0.25``, same label) as an ``.npz`` of four equal-length arrays: ``tr_idx`` and
``tt_idx`` (int, indices into the original train and test order), ``infl`` and ``mem``
(float). :func:`load_released_pairs` reads such a file into the pair table tailscope uses
for its own runs, so the same summary row and histograms apply to both.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tailscope.data.loaders import read_npz
from tailscope.errors import DataError, DatasetNotAvailableError

__all__ = ["RELEASED_TEST_SIZES", "load_released_pairs", "released_test_size"]

RELEASED_KEYS = ("tr_idx", "tt_idx", "infl", "mem")
#: Test-set sizes of the datasets the paper released pairs for (for the "% of test" column).
RELEASED_TEST_SIZES = {"cifar100": 10_000, "cifar-100": 10_000, "imagenet": 50_000}


def load_released_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read a released pair file into a table with columns ``train_index, test_index, infl,
    mem`` (indices into the original train and test order), sorted by decreasing ``infl``
    (then test index)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotAvailableError(f"released pair file {path} does not exist")
    arrays = read_npz(path, RELEASED_KEYS, holds="a released pair file holds")
    lengths = {k: a.shape for k, a in arrays.items()}
    if any(a.ndim != 1 for a in arrays.values()) or len({a.shape for a in arrays.values()}) != 1:
        raise DataError(f"{path}: arrays must be 1-D of equal length, got shapes {lengths}")
    for key in ("tr_idx", "tt_idx"):
        if not np.issubdtype(arrays[key].dtype, np.integer) or (arrays[key] < 0).any():
            raise DataError(f"{path}: {key} must hold non-negative integer indices")
    for key in ("infl", "mem"):
        if not np.issubdtype(arrays[key].dtype, np.floating) or not np.isfinite(arrays[key]).all():
            raise DataError(f"{path}: {key} must hold finite floats")
    frame = pd.DataFrame(
        {
            "train_index": arrays["tr_idx"].astype(np.int64),
            "test_index": arrays["tt_idx"].astype(np.int64),
            "infl": arrays["infl"].astype(np.float64),
            "mem": arrays["mem"].astype(np.float64),
        }
    )
    return frame.sort_values(["infl", "test_index"], ascending=[False, True], ignore_index=True)


def released_test_size(path: str | os.PathLike) -> int | None:
    """The test-set size of a released file's dataset, guessed from its name, or None."""
    name = Path(path).name.lower()
    for key, size in RELEASED_TEST_SIZES.items():
        if name.startswith(key):
            return size
    return None
