"""One-sided exact p-values for a difference of two proportions (one-sided Fisher test).

An estimate ``p_in - p_out`` (memorization, influence) compares ``hits_in`` successes out of
``k_in`` models that trained on an example with ``hits_out`` out of ``k_out`` that did not.
Under the null ``p_in = p_out`` and conditional on the total ``h = hits_in + hits_out``, the
count ``hits_in`` is hypergeometric: ``k_in`` draws without replacement from ``K = k_in +
k_out`` models of which ``h`` succeeded. The one-sided p-value against ``p_in > p_out`` is::

    p = P(X >= hits_in),  X ~ Hypergeometric(K, h, k_in)

It is valid at every level (``P(p <= alpha) <= alpha`` for every common rate, as it is for
every value of the conditioning total), unlike z statistics, whose plug-in standard error is
zero when ``hits_in = k_in`` and ``hits_out = 0``.

The tail is summed from its anchor term ``P(X = x)`` (a ratio of scipy binomial
probabilities, accurate to ~1e-14 relative) with the exact term ratios ``P(X = y + 1) /
P(X = y)``, so p-values keep ~1e-13 relative accuracy far below 1e-8 (down to ~1e-280;
below that ~1e-11, and 0 under the ~1e-308 limit of float64).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from tailscope.errors import DataError

__all__ = ["check_counts", "fisher_pvalues", "hypergeom_tail_window", "hypergeom_upper_tail"]

# A tail sum stops once a term adds less than this relative amount (terms decrease there).
_TERM_TOLERANCE = 2.0**-60
# fisher_pvalues sums one tail per distinct count triple from this many estimates on.
_DEDUPLICATE_FROM = 10_000


def check_counts(
    hits_in: ArrayLike, k_in: ArrayLike, hits_out: ArrayLike, k_out: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four count arrays broadcast together as int64; :class:`DataError` naming the
    argument when one is not a whole number, is negative, or a hit count exceeds its models."""
    arrays = {"hits_in": hits_in, "k_in": k_in, "hits_out": hits_out, "k_out": k_out}
    checked = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
            raise DataError(f"{name} must hold counts (integers), not {array.dtype}")
        if not np.issubdtype(array.dtype, np.integer):
            if np.issubdtype(array.dtype, np.complexfloating) or not np.isfinite(array).all():
                raise DataError(f"{name} must hold finite counts")
            if (array != np.round(array)).any():
                raise DataError(f"{name} must hold whole numbers (counts)")
        array = array.astype(np.int64)
        if array.size and array.min() < 0:
            raise DataError(f"{name} must be >= 0, got {array.min()}")
        checked[name] = array
    try:
        out = np.broadcast_arrays(*checked.values())
    except ValueError:
        shapes = ", ".join(f"{name} {a.shape}" for name, a in checked.items())
        raise DataError(f"the count arrays do not broadcast together: {shapes}") from None
    hits_in, k_in, hits_out, k_out = out
    if (hits_in > k_in).any():
        raise DataError("hits_in must be <= k_in (hits among the models that trained on it)")
    if (hits_out > k_out).any():
        raise DataError("hits_out must be <= k_out (hits among the models that did not)")
    return hits_in, k_in, hits_out, k_out


def fisher_pvalues(
    hits_in: ArrayLike, k_in: ArrayLike, hits_out: ArrayLike, k_out: ArrayLike
) -> np.ndarray:
    """One-sided exact (Fisher) p-values of ``H1: p_in > p_out``, element by element.

    ``p = P(X >= hits_in)`` with ``X ~ Hypergeometric(K = k_in + k_out, h = hits_in +
    hits_out, k_in)``. The arguments are count arrays that broadcast together; the result is
    float64 of their broadcast shape, NaN where ``k_in`` or ``k_out`` is 0 (no estimate).
    ``hits_in = k_in, hits_out = 0`` gives ``1 / C(K, k_in)``, not 0.
    """
    hits_in, k_in, hits_out, k_out = check_counts(hits_in, k_in, hits_out, k_out)
    shape = hits_in.shape
    x, k, K = hits_in.ravel(), k_in.ravel(), (k_in + k_out).ravel()
    h = (hits_in + hits_out).ravel()
    p = np.full(x.shape, np.nan)
    defined = np.flatnonzero((k > 0) & (k < K))
    x, K, h, k = x[defined], K[defined], h[defined], k[defined]
    key = _pack(x, K, h, k) if len(x) > _DEDUPLICATE_FROM else None
    if key is None:
        p[defined] = hypergeom_upper_tail(x, K, h, k)
    else:  # many examples share their counts (n ~ 1e6, K ~ 1e3): one tail sum per triple
        _, first, again = np.unique(key, return_index=True, return_inverse=True)
        p[defined] = hypergeom_upper_tail(x[first], K[first], h[first], k[first])[again]
    return p.reshape(shape)


def _pack(x: np.ndarray, K: np.ndarray, h: np.ndarray, k: np.ndarray) -> np.ndarray | None:
    """One int64 per (x, K, h, k), or None when they do not fit 63 bits."""
    if K.max() < 2**15:
        return ((x << 15 | h) << 15 | k) << 15 | K
    if K.min() == K.max() and K.max() < 2**21:
        return (x << 21 | h) << 21 | k
    return None


def hypergeom_upper_tail(
    x: np.ndarray, total: np.ndarray, hits: np.ndarray, draws: np.ndarray
) -> np.ndarray:
    """``P(X >= x)`` for ``X ~ Hypergeometric(total, hits, draws)``, 1-D int64 arrays in.

    Above the mean, the upper tail is summed from ``P(X = x)``; at or below it, the result is
    ``1 - P(X <= x - 1)`` with the lower tail summed downward (it is then >= ~0.4, so the
    subtraction loses nothing that matters). Vectorized: every loop step advances all sums
    that have not converged.
    """
    x, K, h, k = (np.asarray(a, dtype=np.int64) for a in (x, total, hits, draws))
    x_min = np.maximum(0, h + k - K)
    x_max = np.minimum(h, k)
    p = np.where(x <= x_min, 1.0, 0.0)
    inside = np.flatnonzero((x > x_min) & (x <= x_max))
    above = x[inside] * K[inside] > k[inside] * h[inside]  # x > mean = k h / K, exactly
    up = inside[above]
    p[up] = _tail_sum(x[up], K[up], h[up], k[up], upward=True)
    down = inside[~above]
    p[down] = 1.0 - _tail_sum(x[down] - 1, K[down], h[down], k[down], upward=False)
    return np.clip(p, 0.0, 1.0)


def _tail_sum(y: np.ndarray, K: np.ndarray, h: np.ndarray, k: np.ndarray, upward: bool):
    """``P(X >= y)`` (upward) or ``P(X <= y)`` (downward) from the anchor ``P(X = y)``.

    Terms follow from ``P(X = y + 1) / P(X = y) = (h - y)(k - y) / ((y + 1)(K - h - k + y +
    1))``; every sum runs until its terms fall below 2**-60 of it or its support ends. Each
    element's value depends on that element alone (not on the others in the call).
    """
    anchor = _hypergeom_pmf(y, K, h, k)
    total = np.ones(len(y))
    term = np.ones(len(y))
    active = np.arange(len(y))
    yy, KK, hh, kk = y.astype(np.float64), K.astype(np.float64), h.astype(np.float64), k
    kk = kk.astype(np.float64)
    end = np.minimum(hh, kk) if upward else np.maximum(0.0, hh + kk - KK)
    while len(active):
        ya, Ka, ha, ka = yy[active], KK[active], hh[active], kk[active]
        if upward:
            ratio = (ha - ya) * (ka - ya) / ((ya + 1.0) * (Ka - ha - ka + ya + 1.0))
            yy[active] = ya + 1.0
        else:
            ratio = ya * (Ka - ha - ka + ya) / ((ha - ya + 1.0) * (ka - ya + 1.0))
            yy[active] = ya - 1.0
        step = term[active] * ratio
        term[active] = step
        total[active] += step
        keep = (step > total[active] * _TERM_TOLERANCE) & (yy[active] != end[active])
        active = active[keep]
    return anchor * total


def _hypergeom_pmf(x: np.ndarray, K: np.ndarray, h: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``P(X = x)``, ``X ~ Hypergeometric(K, h, k)``, to ~1e-14 relative, vectorized.

    As a ratio of binomial probabilities (as R's ``dhyper`` does), with ``r = k / K``:
    ``Bin(x; h, r) Bin(k - x; K - h, r) / Bin(k; K, r)``. scipy's binomial pmf is accurate
    to a few ulps, where ``hypergeom.logpmf`` (log-factorials that cancel) loses ~1e-11
    at K = 4000 and ``hypergeom.pmf`` is ~60x slower. Below ~1e-280, where the factors may
    underflow, it falls back to ``exp(logpmf)``.
    """
    r = k / K
    from scipy.stats import binom, hypergeom  # ~0.5 s to import: only when needed

    pmf = binom.pmf(x, h, r) * binom.pmf(k - x, K - h, r) / binom.pmf(k, K, r)
    tiny = pmf < 1e-280
    if tiny.any():
        pmf[tiny] = np.exp(hypergeom.logpmf(x[tiny], K[tiny], h[tiny], k[tiny]))
    return pmf


def hypergeom_tail_window(
    total: int,
    draws: int,
    hits: np.ndarray,
    *,
    below_mean: int = 1,
    floor: float = 1e-40,
    width: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Upper tails ``P(X >= x)`` of ``X ~ Hypergeometric(total, h, draws)`` for every ``h`` in
    ``hits``, on a window of x from just below the mean to far into the upper tail.

    Returns ``(start, tail)``: ``start`` (H,) int64 is ``max(x_min, floor(mean) -
    below_mean)`` and ``tail`` (H, W) float64 holds ``P(X >= start + w)``. One anchor
    probability per row, then exact term ratios (a cumulative product) and a reversed
    cumulative sum: about a hundred times cheaper per value than
    :func:`hypergeom_upper_tail`, and agreeing with it to ~1e-13 relative. The window is
    wide enough that the terms left out past its end are below ``floor`` (absolute), so the
    tails down to ~1e20 ``floor`` carry full relative accuracy. Each row's values depend only
    on its own h and on the window's ``width`` (the number of x; by default the smallest
    multiple of a normal-tail guess that reaches ``floor`` for every row): the same width
    gives the same bits for that h in any call, so tables built from it can be rebuilt,
    for a few rows, instead of kept.
    """
    K, k = int(total), int(draws)
    h = np.asarray(hits, dtype=np.int64)
    x_min, x_max = np.maximum(0, h + k - K), np.minimum(h, k)
    start = np.clip((k * h) // K - below_mean, x_min, x_max)
    sigma = np.sqrt(k * (K - k) * h * (K - h) / (K * K * max(K - 1, 1)))
    # exp(-z^2 / 2) < floor at z = sqrt(2 ln(1 / floor)); skewed tails may need the doubling
    reach = np.sqrt(2.0 * np.log(1.0 / floor)) + 0.5
    fixed = width is not None
    if not fixed:
        width = int(np.ceil(reach * sigma.max(initial=0.0))) + below_mean + 16
    anchor = _hypergeom_pmf(start, np.full_like(h, K), h, np.full_like(h, k))
    hf, start_f = h.astype(np.float64)[:, None], start.astype(np.float64)[:, None]
    while True:
        y = start_f + np.arange(width - 1, dtype=np.float64)[None, :]
        ratio = hf - y
        ratio *= k - y
        y += 1.0
        ratio /= y
        y += float(K - k)
        y -= hf  # now K - h - k + y + 1
        ratio /= y
        np.maximum(ratio, 0.0, out=ratio)  # 0 from the support's end on
        relative = np.empty((len(h), width))
        relative[:, 0] = 1.0
        np.cumprod(ratio, axis=1, out=relative[:, 1:])
        truncated = (start + width - 1 < x_max) & (anchor * relative[:, -1] > floor)
        if fixed or not truncated.any():
            break
        width *= 2
    tail = np.cumsum(relative[:, ::-1], axis=1)[:, ::-1]  # a reversed view: no copy
    tail *= anchor[:, None]
    return start, tail
