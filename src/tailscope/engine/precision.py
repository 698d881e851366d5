"""What ``precision=`` means: the dtype of matrix products, with float32 master weights.

- ``"fp32"``: everything in float32.
- ``"bf16"``: matrix products take bfloat16 inputs (weights, activations, gradients of
  activations) and accumulate in float32; weights, their gradients and the optimizer state
  stay float32, and the softmax / cross-entropy runs in float32. The stacked-MLP trainer
  does this by hand; the generic trainers run their forward passes under
  :func:`torch.autocast`, which applies the same rule op by op.
- ``"auto"``: bf16 where the device multiplies bfloat16 natively (a CUDA GPU for which
  ``torch.cuda.is_bf16_supported(including_emulation=False)``; a CPU with AVX512-BF16 or
  AMX), fp32 elsewhere. A run resolves it once, when it is created (:func:`resolve_precision`),
  and records the result.

bfloat16 pays off only where the hardware multiplies it natively. Elsewhere the CPU
emulates it, slower than float32, and :func:`check_precision` says so once.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch

from tailscope.errors import DataError

__all__ = [
    "PRECISIONS",
    "autocast",
    "bf16_is_native",
    "check_precision",
    "compute_dtype",
    "fp32_products_in_bf16",
    "resolve_precision",
]

#: What a model trains in; ``"auto"`` is resolved to one of these before training.
PRECISIONS = ("fp32", "bf16")


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype of matrix-product inputs for ``precision``."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def bf16_is_native(device: torch.device | str = "cpu") -> bool:
    """True when ``device`` multiplies bfloat16 in hardware.

    CUDA: ``torch.cuda.is_bf16_supported(including_emulation=False)`` (False when CUDA is
    not usable here). CPU: torch's probes for AVX512-BF16 or AMX tiles; False where torch
    has no such probe (other architectures), so that ``"auto"`` never picks an emulated
    bf16. Other devices: False.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def resolve_precision(precision: object, device: torch.device | str = "cpu") -> str:
    """``precision`` as ``"fp32"`` or ``"bf16"``: ``"auto"`` becomes bf16 exactly where
    :func:`bf16_is_native` holds for ``device``."""
    if precision == "auto":
        return "bf16" if bf16_is_native(device) else "fp32"
    if precision not in PRECISIONS:
        raise DataError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    return str(precision)


_warned_emulated = False


def check_precision(precision: object, device: torch.device) -> str:
    """Validate a resolved ``precision``; warn once per process when bf16 would be emulated
    on a CPU."""
    global _warned_emulated
    if precision not in PRECISIONS:
        raise DataError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" and device.type == "cpu" and not bf16_is_native(device):
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


@contextlib.contextmanager
def fp32_products_in_bf16() -> Iterator[None]:
    """Inside, CPU float32 matrix products may round their inputs to bfloat16 and accumulate
    in float32 (oneDNN's bf16 "fpmath" mode: native on CPUs with AVX512-BF16 or AMX,
    emulated on other AVX-512 CPUs; elsewhere torch keeps exact float32 products). For
    inputs that already hold bf16 values every variant computes the same thing, a bf16
    product accumulated in float32 (bf16 x bf16 products are exact in float32). The
    stacked-MLP trainer trains in bf16 on a CPU this way: float32 tensors throughout, the
    rounding inside the kernels. The setting is process-wide; it is restored on exit.
    """
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        yield
    finally:
        matmul.fp32_precision = before
