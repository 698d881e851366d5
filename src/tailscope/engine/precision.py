"""What ``precision=`` means: the dtype of matrix products, with float32 master weights.

- ``"fp32"``: everything in float32.
- ``"bf16"``: matrix products take bfloat16 inputs (weights, activations, gradients of
  activations); weights, their gradients and the optimizer state stay float32, and the
  softmax / cross-entropy runs in float32. The stacked-MLP trainer does this by hand; the
  generic trainers run their forward passes under :func:`torch.autocast`, which applies the
  same rule op by op.

bfloat16 pays off where the hardware multiplies it natively (CUDA GPUs from Ampere on, CPUs
with AVX512-BF16 or AMX). Elsewhere the CPU emulates it, slower than float32, and
:func:`check_precision` says so once.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from tailscope.errors import DataError

__all__ = ["PRECISIONS", "autocast", "check_precision", "compute_dtype", "cpu_has_native_bf16"]

PRECISIONS = ("fp32", "bf16")


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype of matrix-product inputs for ``precision``."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX).

    Asks torch's CPU feature probes; where they do not exist (other torch versions or
    architectures), assumes yes and stays quiet.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if not any(callable(probe) for probe in found):
        return True
    return any(probe() for probe in found if callable(probe))


_warned_emulated = False


def check_precision(precision: object, device: torch.device) -> str:
    """Validate ``precision``; warn once per process when bf16 would be emulated on a CPU."""
    global _warned_emulated
    if precision not in PRECISIONS:
        raise DataError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        if not _warned_emulated:
            warnings.warn(
                "precision='bf16': this CPU has no native bfloat16 instructions (AVX512-BF16 "
                "or AMX), so bf16 matrix products are emulated and slower than fp32",
                stacklevel=3,
            )
            _warned_emulated = True
    return str(precision)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 on ``device`` for ``"bf16"``; a no-op for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    except RuntimeError as err:  # a device type autocast does not know
        raise DataError(f"precision='bf16' is not supported on device {device}: {err}") from err
