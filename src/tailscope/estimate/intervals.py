"""Confidence intervals on a difference of two proportions (memorization, influence).

``difference_interval`` gives, for ``delta = p_in - p_out`` estimated from ``hits_in`` of
``k_in`` and ``hits_out`` of ``k_out`` models, the Agresti-Caffo interval by default: add one
success and one failure to each group, then the Wald interval::

    p~ = (hits + 1) / (k + 2),   delta~ = p~_in - p~_out,
    delta~ +- z sqrt(p~_in (1 - p~_in) / (k_in + 2) + p~_out (1 - p~_out) / (k_out + 2))

clipped to [-1, 1]. It was chosen by exact coverage (the binomial pmf summed over every
outcome whose interval covers the true difference), with k_in = 0.7 K, K in {50, 100, 256,
500, 1000} and rates 0.005 ... 0.995 (tests/test_intervals.py): at 95% its worst stratum
covers 93.6% for K >= 100 (92.3% at K = 50, rates 0.005 vs 0.5), its average 95.3-96.4%.
Newcombe's hybrid score interval (``method="newcombe"``) covers as well for differences up to
0.6 but drops to 90% at 0.995 vs 0.005 (K = 256), where the most memorized examples are; the
plain Wald interval (``method="wald"``) covers 22-87% there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtri

from tailscope._checks import check_choice, check_scalar
from tailscope.estimate.significance import check_counts

__all__ = ["INTERVAL_METHODS", "difference_interval"]

INTERVAL_METHODS = ("agresti-caffo", "newcombe", "wald")


def difference_interval(
    hits_in: ArrayLike,
    k_in: ArrayLike,
    hits_out: ArrayLike,
    k_out: ArrayLike,
    confidence: float = 0.95,
    *,
    method: str = "agresti-caffo",
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided confidence interval on ``p_in - p_out`` from counts, element by element.

    Args:
        hits_in, k_in, hits_out, k_out: count arrays that broadcast together.
        confidence: coverage level in (0, 1).
        method: ``"agresti-caffo"`` (default), ``"newcombe"`` (hybrid Wilson score, method
            10 of Newcombe 1998) or ``"wald"`` (plug-in; for comparison only).

    Returns:
        ``(low, high)``, float64 of the broadcast shape, within [-1, 1]; NaN where ``k_in`` or
        ``k_out`` is 0.
    """
    hits_in, k_in, hits_out, k_out = check_counts(hits_in, k_in, hits_out, k_out)
    level = check_scalar(confidence, "confidence", float, min_val=0, max_val=1, inclusive=False)
    check_choice(method, "method", INTERVAL_METHODS)
    z = float(ndtri(1.0 - (1.0 - level) / 2.0))
    x, n1, y, n2 = (a.astype(np.float64) for a in (hits_in, k_in, hits_out, k_out))
    defined = (n1 > 0) & (n2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "newcombe":
            low, high = _newcombe(x, n1, y, n2, z)
        else:
            if method == "agresti-caffo":
                x, n1, y, n2 = x + 1.0, n1 + 2.0, y + 1.0, n2 + 2.0
            a, b = x / n1, y / n2
            half = z * np.sqrt(a * (1.0 - a) / n1 + b * (1.0 - b) / n2)
            low, high = a - b - half, a - b + half
    low = np.where(defined, np.clip(low, -1.0, 1.0), np.nan)
    high = np.where(defined, np.clip(high, -1.0, 1.0), np.nan)
    return low, high


def _wilson(hits: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of one proportion."""
    p = hits / n
    center = 2.0 * n * p + z * z
    spread = z * np.sqrt(z * z + 4.0 * n * p * (1.0 - p))
    return (center - spread) / (2.0 * (n + z * z)), (center + spread) / (2.0 * (n + z * z))


def _newcombe(x, n1, y, n2, z):
    """Newcombe's hybrid score interval: the Wilson limits of each proportion combined."""
    a, b = x / n1, y / n2
    low1, high1 = _wilson(x, n1, z)
    low2, high2 = _wilson(y, n2, z)
    low = a - b - np.sqrt((a - low1) ** 2 + (high2 - b) ** 2)
    high = a - b + np.sqrt((high1 - a) ** 2 + (b - low2) ** 2)
    return low, high
