"""Estimators of memorization that try to need fewer models than the plain one (issue 11).

Every function here estimates the same quantity as
:func:`~tailscope.estimate.memorization.memorization` (Feldman & Zhang 2020)::

    mem[i] = P[model correct on i | i in its subset] - P[model correct on i | i not in it]

from K models, ``masks[k, i]`` (bool, i in model k's subset) with ``correct[k, i]`` (bool)
or ``margins[k, i]`` (``z_y - max_{c != y} z_c``, positive exactly when model k is correct
on i). Each returns ``(estimate, se)``, two float64 arrays of shape (n,), NaN where the
estimate is undefined. Inputs may be memory-mapped; they are read one chunk of columns at
a time, so memory stays O(K x chunk).

- :func:`plain`: the difference of means, the baseline (``mem`` of :func:`memorization`).
- :func:`covariate_adjusted`: regression adjustment for each model's quality (its test
  accuracy), which is independent of the subsets: unbiased as K grows, less variance when
  models differ in quality.
- :func:`margin_based`: a normal fit to the in- and out-models' margins; uses more of each
  model's output, but is exact only when the margins are normal.
- :func:`shrunk`: empirical-Bayes shrinkage of the plain estimate toward a normal prior per
  bin of the out-rate; less mean squared error when the prior fits, always biased toward
  the bin's mean.

Without assumptions on the margins' distribution, no unbiased estimator built from the
in- and out-models' margins of example i beats :func:`plain`: the models are independent
and identically distributed, the order statistics of each group's margins are complete
sufficient, and the share of positive margins is the minimum-variance unbiased estimate of
``P[margin > 0]``. Fewer models therefore need either information from outside example i
(the models' quality, measured on the test set) or a model (normal margins, a prior
across examples), which can bias. ``benchmarks/bench_efficiency.py`` measures all of them
against a reference from held-back models of a real run.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from tailscope._checks import check_scalar
from tailscope.errors import DataError
from tailscope.estimate._validation import (
    as_bool,
    as_matrix,
    check_chunk_size,
    check_like_masks,
    column_chunks,
)
from tailscope.estimate.memorization import difference_of_means, memorization_counts

__all__ = ["covariate_adjusted", "margin_based", "plain", "shrunk"]

# float64 temporaries of K x chunk: 2**22 entries are 32 MB each.
_CHUNK_ENTRIES = 2**22


def _prepare(masks: ArrayLike, values: ArrayLike, name: str, chunk_size: int | None):
    """Check two (K, n) matrices; return them and the columns per chunk."""
    masks = as_matrix(masks, "masks")
    values = as_matrix(values, name)
    check_like_masks(masks, values, name)
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ENTRIES // masks.shape[0])
    return masks, values, check_chunk_size(chunk_size)


def plain(
    masks: ArrayLike, correct: ArrayLike, *, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The difference of means ``p_in - p_out`` and its SE
    ``sqrt(p_in (1 - p_in) / K_in + p_out (1 - p_out) / K_out)``: the baseline.

    Args:
        masks, correct: (K, n) bool or 0/1.
        chunk_size: columns per chunk (default about 2**24 / K).

    Returns:
        ``(estimate, se)``, float64 (n,); NaN where ``K_in`` or ``K_out`` is 0.
    """
    return difference_of_means(*memorization_counts(masks, correct, chunk_size=chunk_size))


def covariate_adjusted(
    masks: ArrayLike,
    correct: ArrayLike,
    quality: ArrayLike,
    *,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Memorization adjusted for model quality: per example i, the OLS regression ::

        correct[k, i] = b0 + mem[i] in[k, i] + b2 (quality[k] - mean(quality)) + e[k, i]

    over the K models; ``mem[i]`` is the coefficient of ``in``. ``quality`` must not depend
    on i's membership: the models' accuracy on the test set is the intended covariate, one
    value per model (K,), or one per model and example (K, n), e.g. each model's test
    accuracy on i's class. As the masks are random and independent of it, ``in`` and
    ``quality`` are uncorrelated and the coefficient estimates the same ``p_in - p_out`` as
    :func:`plain` (regression adjustment of a randomized experiment; bias O(1/K)), with the
    part of the variance that model-to-model quality explains removed.

    Computed by Frisch-Waugh-Lovell: with ``q = quality - mean_k(quality)``, ``r`` the
    residual of ``in`` on ``[1, q]`` and ``e`` the full regression's residuals, ::

        mem = sum_k r_k correct_k / sum_k r_k^2,   se^2 = sum_k r_k^2 e_k^2 / (sum_k r_k^2)^2

    The SE is the heteroskedasticity-consistent HC0 (White) sandwich: 0/1 outcomes are
    heteroskedastic, and without quality variation HC0 equals the plain SE exactly (so does
    the estimate: a constant ``quality`` gives :func:`plain`).

    Args:
        masks, correct: (K, n) bool or 0/1.
        quality: (K,) or (K, n) finite numbers, e.g. each model's test accuracy.
        chunk_size: columns per chunk (default about 2**22 / K).

    Returns:
        ``(estimate, se)``, float64 (n,); NaN where i is in every subset or in none.
    """
    masks, correct, chunk_size = _prepare(masks, correct, "correct", chunk_size)
    n_models, n_train = masks.shape
    if not isinstance(quality, np.ndarray):
        quality = np.asarray(quality, dtype=np.float64)
    if quality.shape not in ((n_models,), masks.shape):
        raise DataError(
            f"quality has shape {quality.shape} but must have shape ({n_models},) or "
            f"{masks.shape}: one value per model, or per model and example"
        )

    estimate = np.full(n_train, np.nan)
    se = np.full(n_train, np.nan)
    for columns in column_chunks(n_train, chunk_size):
        x = as_bool(masks[:, columns], "masks").astype(np.float64)
        y = as_bool(correct[:, columns], "correct").astype(np.float64)
        q = np.asarray(quality[:, columns] if quality.ndim == 2 else quality[:, None], float)
        if not np.isfinite(q).all():
            raise DataError("quality must be finite")
        q = q - q.mean(axis=0)
        qq = np.einsum("ki,ki->i", q, q)
        scale = np.maximum(1.0, np.abs(q).max(axis=0)) ** 2
        # No variation to adjust for: the plain estimator.
        qq = np.where(qq > 1e-12 * n_models * scale, qq, np.inf)
        r = x - x.mean(axis=0) - q * (np.einsum("ki,ki->i", q, x) / qq)  # in, on [1, q]
        y_r = y - y.mean(axis=0) - q * (np.einsum("ki,ki->i", q, y) / qq)  # correct, likewise
        rr = np.einsum("ki,ki->i", r, r)
        defined = rr > 1e-9
        rr = np.where(defined, rr, 1.0)
        b = np.einsum("ki,ki->i", r, y_r) / rr
        e = y_r - r * b
        variance = np.einsum("ki,ki->i", r * r, e * e) / rr**2
        estimate[columns] = np.where(defined, b, np.nan)
        se[columns] = np.where(defined, np.sqrt(variance), np.nan)
    return estimate, se


def _normal_pdf(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)


def _tail_and_variance(x: np.ndarray, members: np.ndarray, k: np.ndarray):
    """``Phi(mu / sd)`` of the columns' values where ``members`` holds, and its delta-method
    variance ``pdf(z)^2 (1 / k + z^2 / (2 (k - 1)))``; NaN where ``k < 2``."""
    ok = k >= 2
    k_safe = np.where(ok, k, 2.0)
    mu = np.einsum("ki,ki->i", members, x) / k_safe
    deviation = (x - mu) * members
    sd = np.sqrt(np.einsum("ki,ki->i", deviation, deviation) / (k_safe - 1.0))
    # sd = 0: every margin equal; P[margin > 0] is 1 if that margin is positive, else 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, mu / sd, np.where(mu > 0, np.inf, -np.inf))
    pdf = np.where(np.isfinite(z), _normal_pdf(np.where(np.isfinite(z), z, 0.0)), 0.0)
    z_finite = np.where(np.isfinite(z), z, 0.0)
    variance = pdf**2 * (1.0 / k_safe + z_finite**2 / (2.0 * (k_safe - 1.0)))
    return np.where(ok, ndtr(z), np.nan), np.where(ok, variance, np.nan)


def margin_based(
    masks: ArrayLike, margins: ArrayLike, *, chunk_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Memorization from normal fits to the margins: per example i, ::

        mem[i] = Phi(mu_in / sd_in) - Phi(mu_out / sd_out)

    with ``mu``, ``sd`` the mean and sample standard deviation (ddof 1) of the margins of the
    ``K_in`` in-models and of the ``K_out`` out-models of i, ``Phi`` the standard normal CDF:
    ``P[margin > 0]`` = P[correct] under each normal. The SE is the delta method's, with
    ``Var(mu) = sd^2 / K`` and ``Var(sd) = sd^2 / (2 (K - 1))`` (normal data)::

        se^2 = sum_{g in {in, out}} pdf(z_g)^2 (1 / K_g + z_g^2 / (2 (K_g - 1))),  z = mu / sd

    Where ``sd = 0`` (all margins of a group equal) the group's term is exactly 1 or 0 with
    variance 0. The estimate is exact only if the margins are normal; skewed or bimodal
    margins bias it (``benchmarks/bench_efficiency.py`` measures by how much).

    Args:
        masks: (K, n) bool or 0/1.
        margins: (K, n) finite numbers (float16 margins of a run are fine).
        chunk_size: columns per chunk (default about 2**22 / K).

    Returns:
        ``(estimate, se)``, float64 (n,); NaN where ``K_in < 2`` or ``K_out < 2``.
    """
    masks, margins, chunk_size = _prepare(masks, margins, "margins", chunk_size)
    if margins.dtype == np.bool_:
        raise DataError("margins must be numbers, not booleans")
    n_models, n_train = masks.shape
    estimate = np.full(n_train, np.nan)
    se = np.full(n_train, np.nan)
    for columns in column_chunks(n_train, chunk_size):
        inside = as_bool(masks[:, columns], "masks").astype(np.float64)
        x = np.asarray(margins[:, columns], dtype=np.float64)
        if not np.isfinite(x).all():
            raise DataError("margins must be finite (found NaN or inf)")
        k_in = inside.sum(axis=0)
        p_in, var_in = _tail_and_variance(x, inside, k_in)
        p_out, var_out = _tail_and_variance(x, 1.0 - inside, n_models - k_in)
        estimate[columns] = p_in - p_out
        se[columns] = np.sqrt(var_in + var_out)
    return estimate, se


def shrunk(
    masks: ArrayLike,
    correct: ArrayLike,
    *,
    bins: int = 10,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical-Bayes shrinkage of the plain estimate ``d_i`` (SE ``s_i``, :func:`plain`).

    The examples are grouped into ``bins`` bins of equal counts by their out-rate
    ``p_out`` (memorization depends on how hard an example is without itself); within bin
    b, a normal prior ``mem ~ Normal(m_b, tau_b^2)`` is fitted by the method of moments,
    ``m_b = mean(d)`` and ``tau_b^2 = max(var(d) - mean(s^2), 0)``, and each estimate is
    replaced by its posterior mean and standard deviation (normal likelihood ``d ~
    Normal(mem, s^2)``)::

        w_i = tau_b^2 / (tau_b^2 + s_i^2),   estimate = m_b + w_i (d_i - m_b),
        se = sqrt(w_i) s_i

    This lowers the mean squared error over all examples when the normal prior fits (on a
    synthetic run to less than half), but pulls every estimate toward ``m_b``: the largest
    memorization, the examples a study is after, is biased, and on real runs, whose
    memorization is far from normal within a bin, it did not lower the error
    (``benchmarks/bench_efficiency.py``). ``se`` is a posterior standard deviation, not the
    spread of the estimate over repeated runs. ``bins=1`` fits one prior to all examples.
    An example with ``s_i = 0`` keeps ``d_i``.

    Args:
        masks, correct: (K, n) bool or 0/1.
        bins: bins of the out-rate (fewer when the out-rates tie), >= 1.
        chunk_size: columns per chunk (default about 2**24 / K).

    Returns:
        ``(estimate, se)``, float64 (n,); NaN where ``K_in`` or ``K_out`` is 0.
    """
    bins = check_scalar(bins, "bins", int, min_val=1)
    hits_in, k_in, hits_out, k_out = memorization_counts(masks, correct, chunk_size=chunk_size)
    d, s = difference_of_means(hits_in, k_in, hits_out, k_out)
    estimate = np.full(d.shape, np.nan)
    se = np.full(d.shape, np.nan)
    defined = np.flatnonzero(np.isfinite(d))
    if len(defined) == 0:
        return estimate, se
    p_out = hits_out[defined] / k_out[defined]
    edges = np.unique(np.quantile(p_out, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    group = np.searchsorted(edges, p_out, side="right")
    for b in np.unique(group):
        members = defined[group == b]
        d_b, s2_b = d[members], s[members] ** 2
        mean = d_b.mean()
        tau2 = max(float(d_b.var()) - float(s2_b.mean()), 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(s2_b > 0, tau2 / (tau2 + s2_b), 1.0)
        estimate[members] = mean + w * (d_b - mean)
        se[members] = np.sqrt(w * s2_b)
    return estimate, se
