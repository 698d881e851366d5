"""Power of the one-sided Fisher test, and the number of models an effect needs.

Convention: the train example (or pair) has out-of-subset rate ``p_out = base_rate`` (the
accuracy of the models that did not train on it) and in-subset rate ``p_in = base_rate +
effect``, clipped into [0, 1]. With K models, ``k_in = floor(ratio K + 1/2)`` trained on it
and ``k_out = K - k_in`` did not. The test at per-test level ``alpha`` rejects when the
one-sided Fisher p-value (:func:`tailscope.estimate.fisher_pvalues`) is ``<= alpha``. Its
exact power is the joint binomial probability of the rejection region::

    power = sum_{x, y} Bin(x; k_in, p_in) Bin(y; k_out, p_out) [x >= c(x + y)]

where ``c(h)`` is the smallest in-count whose p-value given ``h`` hits in all is
``<= alpha`` (the test rejects exactly from there up, for every h). The sum runs over the
counts that carry all but ~1e-16 of each binomial's mass.
"""

from __future__ import annotations

import math

import numpy as np

from tailscope._checks import check_scalar
from tailscope.errors import DataError
from tailscope.estimate.significance import hypergeom_tail_window, hypergeom_upper_tail

__all__ = ["critical_counts", "detection_power", "models_needed"]

# Binomial mass left out of the power sum, on each side of each binomial.
_TAIL_MASS = 1e-17
# Levels at which critical counts are read off a tail window (accurate to ~1e-27 there).
_WINDOW_ALPHA = (1e-25, 0.25)


def _check_probability(value: object, name: str, *, open_low: bool, open_high: bool) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number, got {value!r}") from None
    low_ok = number > 0.0 if open_low else number >= 0.0
    high_ok = number < 1.0 if open_high else number <= 1.0
    if not (np.isfinite(number) and low_ok and high_ok):
        low, high = "(" if open_low else "[", ")" if open_high else "]"
        raise DataError(f"{name} must be in {low}0, 1{high}, got {value!r}")
    return number


def _rates(effect: object, base_rate: object) -> tuple[float, float]:
    size = check_scalar(effect, "effect", float)
    p_out = _check_probability(base_rate, "base_rate", open_low=False, open_high=False)
    return min(max(p_out + size, 0.0), 1.0), p_out


def _split(n_models: int, ratio: float) -> tuple[int, int]:
    k_in = math.floor(ratio * n_models + 0.5)
    return k_in, n_models - k_in


def critical_counts(n_models: int, k_in: int, hits: np.ndarray, alpha: float) -> np.ndarray:
    """For each total ``h`` in ``hits``: the smallest ``x`` with ``P(X >= x) <= alpha``,
    ``X ~ Hypergeometric(n_models, h, k_in)`` (``min(h, k_in) + 1`` when there is none).

    For ``1e-25 <= alpha <= 0.25``, read off :func:`hypergeom_tail_window` (one table for
    every h; it agrees with :func:`hypergeom_upper_tail` to ~1e-13 relative, so the two
    differ only for a p-value that close to alpha); otherwise a bisection over x for all h at
    once on :func:`hypergeom_upper_tail`, which is non-increasing in x.
    """
    h = np.asarray(hits, dtype=np.int64)
    low = np.maximum(0, h + k_in - n_models)  # P(X >= low) = 1 > alpha
    high = np.minimum(h, k_in) + 1  # P(X >= high) = 0 <= alpha
    if _WINDOW_ALPHA[0] <= alpha <= _WINDOW_ALPHA[1]:
        start, tail = hypergeom_tail_window(n_models, k_in, h)
        if not ((tail[:, 0] <= alpha) & (start > low)).any():
            return np.minimum(start + np.count_nonzero(tail > alpha, axis=1), high)
    total = np.full(len(h), n_models, dtype=np.int64)
    draws = np.full(len(h), k_in, dtype=np.int64)
    while True:
        open_ = np.flatnonzero(high - low > 1)
        if not len(open_):
            return high
        middle = (low[open_] + high[open_]) // 2
        tail = hypergeom_upper_tail(middle, total[open_], h[open_], draws[open_])
        rejects = tail <= alpha
        high[open_[rejects]] = middle[rejects]
        low[open_[~rejects]] = middle[~rejects]


def _support(n: int, p: float) -> np.ndarray:
    """The counts of Bin(n, p) outside of which lies at most ``_TAIL_MASS`` per side."""
    from scipy.stats import binom  # ~0.5 s to import: only when needed

    if n == 0:
        return np.zeros(1, dtype=np.int64)
    low = int(binom.ppf(_TAIL_MASS, n, p)) if p > 0 else 0
    # the upper quantile through the mirrored lower one (isf rounds 1 - 1e-17 to 1)
    high = n - int(binom.ppf(_TAIL_MASS, n, 1.0 - p)) + 1 if p < 1 else n
    return np.arange(max(low - 1, 0), min(high, n) + 1, dtype=np.int64)


def _power(n_models: int, k_in: int, p_in: float, p_out: float, alpha: float) -> float:
    from scipy.stats import binom  # ~0.5 s to import: only when needed

    k_out = n_models - k_in
    if k_in < 1 or k_out < 1:
        return 0.0
    x, y = _support(k_in, p_in), _support(k_out, p_out)
    first = x[0] + y[0]
    critical = critical_counts(n_models, k_in, np.arange(first, x[-1] + y[-1] + 1), alpha)
    steps = np.diff(critical)
    if len(steps) and (steps.min() < 0 or steps.max() > 1):  # never seen; sum it all
        rejected = x[:, None] >= critical[x[:, None] + y[None, :] - first]
        mass = binom.pmf(x, k_in, p_in)[:, None] * binom.pmf(y, k_out, p_out)[None, :]
        return float(min(np.sum(mass * rejected), 1.0))
    # c(h + 1) - c(h) in {0, 1}: x - c(x + y) never falls as x grows, so for every y the
    # rejected x are those from the first x with x >= c(x + y) on (bisection for all y).
    low = np.full(len(y), x[0] - 1)  # not known to reject
    high = np.full(len(y), x[-1] + 1)  # rejects (or past the support)
    while True:
        open_ = np.flatnonzero(high - low > 1)
        if not len(open_):
            break
        middle = (low[open_] + high[open_]) // 2
        rejects = middle >= critical[middle + y[open_] - first]
        high[open_[rejects]] = middle[rejects]
        low[open_[~rejects]] = middle[~rejects]
    beyond = high > x[-1]  # no rejection within the support: < 1e-17 of mass there
    tail = np.where(beyond, 0.0, binom.sf(high - 1, k_in, p_in))
    return float(min(np.dot(binom.pmf(y, k_out, p_out), tail), 1.0))


def detection_power(
    effect: float, alpha: float, base_rate: float, n_models: int, ratio: float = 0.7
) -> float:
    """Exact probability that the one-sided Fisher test at level ``alpha`` rejects, for a true
    difference ``effect`` (``p_in = base_rate + effect``, ``p_out = base_rate``, clipped into
    [0, 1]) with ``n_models`` models of which ``floor(ratio K + 1/2)`` trained on the example.

    0 when either group is empty. At ``effect = 0`` it is the test's size, ``<= alpha``.
    """
    p_in, p_out = _rates(effect, base_rate)
    level = _check_probability(alpha, "alpha", open_low=True, open_high=True)
    share = _check_probability(ratio, "ratio", open_low=True, open_high=True)
    check_scalar(n_models, "n_models", int, min_val=1)
    k_in, _ = _split(int(n_models), share)
    return _power(int(n_models), k_in, p_in, p_out, level)


def models_needed(
    effect: float,
    alpha: float,
    base_rate: float,
    ratio: float = 0.7,
    power: float = 0.8,
    *,
    max_models: int = 1_000_000,
) -> int | None:
    """The number of models K at which the one-sided Fisher test at per-test level ``alpha``
    detects ``effect`` (see :func:`detection_power`) with probability ``>= power``.

    The exact power is a sawtooth in K (discreteness), rising overall; this returns the K
    where a bisection on it crosses ``power``: ``detection_power(K) >= power >
    detection_power(K - 1)``, started from the normal approximation
    ``K ~ (z_alpha + z_power)^2 (p_in (1 - p_in) / ratio + p_out (1 - p_out) / (1 - ratio))
    / effect^2``. ``None`` when even ``max_models`` models fall short. Exact power costs
    ~10-100 ms per K (K up to ~20,000), so a call takes well under a few seconds.
    """
    from scipy.stats import norm  # ~0.5 s to import: only when needed

    p_in, p_out = _rates(effect, base_rate)
    if not p_in > p_out:
        raise DataError(
            f"effect must be > 0 with base_rate + effect still above base_rate after "
            f"clipping to [0, 1]; got effect={effect!r}, base_rate={base_rate!r}"
        )
    level = _check_probability(alpha, "alpha", open_low=True, open_high=True)
    share = _check_probability(ratio, "ratio", open_low=True, open_high=True)
    target = _check_probability(power, "power", open_low=True, open_high=True)
    check_scalar(max_models, "max_models", int, min_val=2)

    def exact(n_models: int) -> float:
        return _power(n_models, _split(n_models, share)[0], p_in, p_out, level)

    variance = p_in * (1 - p_in) / share + p_out * (1 - p_out) / (1 - share)
    guess = (norm.isf(level) + norm.isf(1 - target)) ** 2 * variance / (p_in - p_out) ** 2
    high = int(min(max(math.ceil(guess), 2), max_models))
    low = 1  # power 0: one model cannot be both in and out
    step = max(high // 16, 1)  # the normal guess is close, except near rates 0 and 1
    while exact(high) < target:
        if high >= max_models:
            return None
        low, high = high, int(min(high + step, max_models))
        step *= 2
    step = max(high // 16, 1)
    while high - step > low and exact(high - step) >= target:
        high, step = high - step, 2 * step
    low = max(low, high - step)
    while high - low > 1:
        middle = (low + high) // 2
        if exact(middle) >= target:
            high = middle
        else:
            low = middle
    return high
