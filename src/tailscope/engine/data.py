"""The training data as the engine holds it: validated tensors on the training device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tailscope.errors import DataError

__all__ = ["DeviceData", "to_device_data"]


@dataclass(frozen=True)
class DeviceData:
    """Train and test split on one device: x float32 (n, *shape)/(t, *shape), y int64."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.x_train.device


def _features(x: object, name: str, device: torch.device) -> Tensor:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise DataError(
            f"{name} must hold float features (scale raw data with tailscope.data.features), "
            f"got dtype {x.dtype}"
        )
    if x.ndim < 2 or len(x) == 0:
        raise DataError(
            f"{name} must have shape (n_examples, *feature_shape), got {tuple(x.shape)}"
        )
    return x.to(device=device, dtype=torch.float32)


def _labels(y: object, name: str, n_rows: int, device: torch.device) -> Tensor:
    y = np.asarray(y.cpu() if isinstance(y, Tensor) else y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name} must be a 1-D array of integer labels, got {y.dtype} {y.shape}")
    if len(y) != n_rows:
        raise DataError(f"{name} has {len(y)} labels for {n_rows} examples")
    return torch.as_tensor(y, dtype=torch.int64).to(device)


def to_device_data(
    x_train: object,
    y_train: object,
    x_test: object,
    y_test: object,
    n_classes: int | None,
    device: torch.device | str,
) -> DeviceData:
    """Validate both splits and move them to ``device`` once.

    ``n_classes`` defaults to ``max(label) + 1`` over both splits.
    """
    device = torch.device(device)
    xtr = _features(x_train, "x_train", device)
    xte = _features(x_test, "x_test", device)
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(
            f"x_train examples have shape {tuple(xtr.shape[1:])} but x_test examples have "
            f"shape {tuple(xte.shape[1:])}"
        )
    ytr = _labels(y_train, "y_train", len(xtr), device)
    yte = _labels(y_test, "y_test", len(xte), device)
    lowest = int(min(ytr.min(), yte.min()))
    highest = int(max(ytr.max(), yte.max()))
    if n_classes is None:
        n_classes = highest + 1
    if lowest < 0 or highest >= n_classes:
        raise DataError(f"labels must lie in [0, {n_classes}), got min {lowest}, max {highest}")
    if n_classes < 2:
        raise DataError(f"n_classes must be at least 2, got {n_classes}")
    return DeviceData(xtr, ytr, xte, yte, int(n_classes))
