"""Argument checks shared across modules (scikit-learn style: the message names the argument)."""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np
import torch
from numpy.typing import ArrayLike

from tailscope.errors import DataError

__all__ = ["check_choice", "check_device", "check_positions", "check_scalar"]


def check_scalar(
    value: object,
    name: str,
    target_type: type[int] | type[float],
    *,
    min_val: float | None = None,
    max_val: float | None = None,
    inclusive: bool = True,
) -> int | float:
    """``value`` as a finite ``int`` or ``float`` within ``[min_val, max_val]`` (open bounds
    with ``inclusive=False``), like :func:`sklearn.utils.check_scalar`.

    An int target takes Python and numpy integers (never bools); a float target also takes
    them. Raises :class:`DataError` naming ``name`` and the allowed range.
    """
    integer = isinstance(value, int | np.integer) and not isinstance(value, bool)
    real = integer or (isinstance(value, float | np.floating) and math.isfinite(value))
    ok = integer if target_type is int else real
    if ok:
        value = target_type(value)
        low_ok = min_val is None or (value >= min_val if inclusive else value > min_val)
        high_ok = max_val is None or (value <= max_val if inclusive else value < max_val)
        ok = low_ok and high_ok
    if not ok:
        kind = "an integer" if target_type is int else "a finite number"
        brackets = "[]" if inclusive else "()"
        if min_val is not None and max_val is not None:
            kind += f" in {brackets[0]}{min_val:g}, {max_val:g}{brackets[1]}"
        elif min_val is not None:
            kind += f" {'>=' if inclusive else '>'} {min_val:g}"
        elif max_val is not None:
            kind += f" {'<=' if inclusive else '<'} {max_val:g}"
        raise DataError(f"{name} must be {kind}, got {value!r}")
    return value


def check_choice(value: object, name: str, choices: Collection[object]) -> object:
    """``value`` if it is one of ``choices``; else a :class:`DataError` listing them."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise DataError(f"{name} must be one of {listed}; got {value!r}")
    return value


def check_device(device: object, name: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` that this process can allocate on.

    Raises :class:`DataError` naming ``name`` for a string torch cannot parse, or a device
    this torch build or machine lacks (``"cuda"`` with a CPU-only wheel, ``"cuda:3"`` on a
    one-GPU machine), instead of the assertion torch raises at first use.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DataError(f"{name} {device!r} is not a torch device: {err}") from None
    try:
        torch.empty(0, device=parsed)
    except (AssertionError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{name} {str(parsed)!r} is not usable here: {reason}") from None
    return parsed


def check_positions(
    positions: ArrayLike, size: int, name: str, *, unique: bool = False
) -> np.ndarray:
    """Validate 1-D integer positions into an axis of length ``size``; returns int64.

    Raises :class:`DataError` naming ``name`` when the array is not 1-D, not integer, out of
    ``[0, size)``, or (with ``unique``) has duplicates.
    """
    index = np.asarray(positions)
    if index.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {index.shape}")
    if index.size == 0:
        return index.astype(np.int64)
    if not np.issubdtype(index.dtype, np.integer):
        raise DataError(f"{name} must hold integers, not {index.dtype}")
    if index.min() < 0 or index.max() >= size:
        raise DataError(
            f"{name} must lie in [0, {size}), got values from {index.min()} to {index.max()}"
        )
    if unique and len(np.unique(index)) != len(index):
        raise DataError(f"{name} has duplicate entries")
    return index.astype(np.int64)
