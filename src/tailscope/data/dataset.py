"""The :class:`Dataset` type: a train and a test split with labels, class names and identity.

A dataset holds the features exactly as the user (or a loader) handed them over: uint8
images stay uint8, unscaled floats stay unscaled. Scaling for training happens later
(:func:`tailscope.data.features`), so galleries can show the raw images and the content hash
identifies the data itself, not a preprocessing of it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from tailscope.errors import DataError

__all__ = ["Dataset"]


def _check_split(x: object, y: object, split: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2:
        raise DataError(
            f"x_{split} must have shape (n_examples, n_features...) but has shape {x.shape}"
        )
    if y.ndim != 1:
        raise DataError(f"y_{split} must be one-dimensional but has shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"x_{split} has {len(x)} rows but y_{split} has {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"the {split} split is empty")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"x_{split} must be numeric, not {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
        raise DataError(f"x_{split} has NaN or infinite features in {bad} examples")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"y_{split} must hold integer class labels")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"y_{split} must hold integer class labels, not {y.dtype}")
    return x, y.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset: train and test features and labels.

    Attributes:
        name: short identifier (``"mnist"``, ``"digits"``, a file name, ``"arrays"``).
        x_train: (n, *shape) features as given (uint8 images or floats).
        y_train: (n,) int64 labels in ``[0, n_classes)``.
        x_test: (t, *shape) features.
        y_test: (t,) int64 labels.
        class_names: one name per class.
        train_index: (n,) int64 position of each train example in the source dataset; a
            stratified subset keeps the source order, so outputs can name source indices.
        test_index: (t,) int64, likewise for the test split.
        source: how to load this dataset again (JSON-able), recorded in a run's spec.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    train_index: np.ndarray = field(repr=False)
    test_index: np.ndarray = field(repr=False)
    source: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_arrays(
        cls,
        x_train: object,
        y_train: object,
        x_test: object,
        y_test: object,
        *,
        class_names: Sequence[str] | None = None,
        name: str = "arrays",
        source: dict | None = None,
    ) -> Dataset:
        """Validate arrays and build a dataset.

        Labels must be integers in ``[0, n_classes)``, where ``n_classes`` is
        ``len(class_names)`` if given, else ``max(label) + 1``. Features must be numeric,
        finite, and have the same per-example shape in both splits.
        """
        x_train, y_train = _check_split(x_train, y_train, "train")
        x_test, y_test = _check_split(x_test, y_test, "test")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise DataError(
                f"train examples have shape {x_train.shape[1:]} but test examples have "
                f"shape {x_test.shape[1:]}"
            )
        n_classes = (
            len(class_names)
            if class_names is not None
            else int(max(y_train.max(), y_test.max())) + 1
        )
        for split, y in (("train", y_train), ("test", y_test)):
            if y.min() < 0 or y.max() >= n_classes:
                raise DataError(
                    f"y_{split} has labels outside [0, {n_classes}): "
                    f"min {int(y.min())}, max {int(y.max())}"
                )
        if n_classes < 2:
            raise DataError("a classification dataset needs at least 2 classes")
        unseen = np.setdiff1d(np.unique(y_test), np.unique(y_train))
        if len(unseen):
            warnings.warn(
                f"test labels {unseen.tolist()} never occur in the train split: no model can "
                "learn them (labels shifted or mismatched between the splits?)",
                UserWarning,
                stacklevel=2,
            )
        names = (
            tuple(str(c) for c in class_names)
            if class_names is not None
            else tuple(str(c) for c in range(n_classes))
        )
        return cls(
            name=name,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            class_names=names,
            train_index=np.arange(len(y_train), dtype=np.int64),
            test_index=np.arange(len(y_test), dtype=np.int64),
            source=dict(source) if source is not None else {"kind": "arrays"},
        )

    # ---- shape facts -------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def is_image(self) -> bool:
        """True when examples are 2-D (H, W) or 3-D (H, W, C) / (C, H, W) images."""
        return self.x_train.ndim in (3, 4)

    # ---- identity ----------------------------------------------------------------------
    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of both splits' features and labels (shapes and dtypes included)."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        h.update("\x1f".join(self.class_names).encode())
        return h.hexdigest()

    # ---- subsets -----------------------------------------------------------------------
    def subset(
        self,
        n_train: int | None = None,
        n_test: int | None = None,
        random_state: int | None = 0,
    ) -> Dataset:
        """A stratified subset of each split, kept in source order.

        ``train_index``/``test_index`` of the result point into the source dataset.
        """

        def pick(y: np.ndarray, size: int | None, split: str) -> np.ndarray:
            if size is None or size == len(y):
                return np.arange(len(y))
            if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
                raise DataError(f"n_{split} must be an integer, got {size!r}")
            if size < 2 or size > len(y):
                raise DataError(f"n_{split} must be in [2, {len(y)}], got {size}")
            stratify = y if size >= self.n_classes and len(y) - size >= self.n_classes else None
            from sklearn.model_selection import train_test_split  # ~0.8 s to import

            keep, _ = train_test_split(
                np.arange(len(y)),
                train_size=int(size),
                stratify=stratify,
                random_state=random_state,
            )
            return np.sort(keep)

        tr = pick(self.y_train, n_train, "train")
        te = pick(self.y_test, n_test, "test")
        source = dict(self.source)
        if n_train is not None or n_test is not None:
            source["subset"] = {"n_train": n_train, "n_test": n_test, "seed": random_state}
        return Dataset(
            name=self.name,
            x_train=self.x_train[tr],
            y_train=self.y_train[tr],
            x_test=self.x_test[te],
            y_test=self.y_test[te],
            class_names=self.class_names,
            train_index=self.train_index[tr],
            test_index=self.test_index[te],
            source=source,
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"feature_shape={self.feature_shape}, n_classes={self.n_classes})"
        )
