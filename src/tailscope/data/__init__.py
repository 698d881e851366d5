"""Datasets: the :class:`Dataset` type, loaders, and feature scaling.

``tailscope.datasets`` is an alias of this module::

    import tailscope as ts
    data = ts.datasets.load("mnist", n_train=10_000)   # or "digits", "fashion-mnist", a path
    x_train, x_test = ts.datasets.features(data)        # scaled float32
"""

from __future__ import annotations

from tailscope.data.dataset import Dataset
from tailscope.data.features import SCALINGS, features, resolve_scaling
from tailscope.data.loaders import BUILTINS, available, load, load_source

__all__ = [
    "BUILTINS",
    "SCALINGS",
    "Dataset",
    "available",
    "features",
    "from_arrays",
    "load",
    "load_source",
    "resolve_scaling",
]

from_arrays = Dataset.from_arrays
