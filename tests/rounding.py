"""What two trainings of the same models may differ by when their kernels differ.

tailscope guarantees bit-identical rows only where the same kernels run the same shapes: a
resumed run equals an uninterrupted one on the same machine, and a Ray run equals a local
one with the same chunks and the same threads per task. A model trained in another chunk
composition, with another thread count or on another instruction set runs other kernels
(MKL's batched products, oneDNN's bf16 ones) whose round-off differs, and the guarantee is
agreement within what that round-off allows:

    |margin_a - margin_b| <= 2 ulp_f16(|margin|) + 4 sqrt(T) u s

- the first term is the float16 storage of margins: two float32 values a hair apart can
  round to neighbouring float16 values;
- the second is round-off carried through training: each of the T SGD steps rounds its
  products at the unit round-off u of their inputs (2^-24 for fp32, 2^-8 for bf16),
  relative to the logit scale s (the model's largest |margin|); independent errors add up
  like a random walk, sqrt(T) u s, and 4 is headroom. Measured across chunk compositions,
  1 vs 2 threads, ``MKL_CBWR=AUTO,STRICT``, ``MKL_ENABLE_INSTRUCTIONS=AVX2`` and
  ``ONEDNN_MAX_CPU_ISA=AVX2`` on a Sapphire Rapids Xeon, the largest difference was 1.3
  sqrt(T) u s (fp32) and 0.7 sqrt(T) u s (bf16), over 66 and 440 steps.

A model's correctness may differ only where its margin is within that bound of 0.
"""

from __future__ import annotations

import math

import numpy as np

#: Unit round-off of the matrix-product inputs of each precision.
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "bf16": 2.0**-8}


def rounding_bound(margin: np.ndarray, precision: str, steps: int) -> np.ndarray:
    """The bound above, elementwise, for (k, n) stored margins of k models."""
    margin = np.abs(np.asarray(margin, dtype=np.float32))
    storage = 2 * np.spacing(margin.astype(np.float16)).astype(np.float32)
    scale = margin.max(axis=1, keepdims=True)
    return storage + 4 * math.sqrt(steps) * UNIT_ROUNDOFF[precision] * scale


def assert_same_up_to_rounding(a, b, precision: str, steps: int) -> None:
    """Two :class:`~tailscope.engine.ModelOutputs` (or dicts of rows) of the same models,
    trained with other kernels, agree within :func:`rounding_bound`."""
    for split in ("train", "test"):
        ma = np.asarray(_get(a, f"margin_{split}"), dtype=np.float32)
        mb = np.asarray(_get(b, f"margin_{split}"), dtype=np.float32)
        bound = np.maximum(
            rounding_bound(ma, precision, steps), rounding_bound(mb, precision, steps)
        )
        excess = np.abs(ma - mb) - bound
        assert excess.max() <= 0, (
            f"{split} margins differ by up to {np.abs(ma - mb).max():.3g}, "
            f"{excess.max():.3g} beyond the rounding bound"
        )
        differ = np.asarray(_get(a, f"correct_{split}")) != np.asarray(_get(b, f"correct_{split}"))
        assert np.all(np.abs(mb[differ]) <= bound[differ])


def _get(rows, name: str) -> np.ndarray:
    return rows[name] if isinstance(rows, dict) else getattr(rows, name)
