"""Synthetic runs with planted memorization and influence, whose true values are known.

Model k trains on a uniformly random subset of exactly ``m = round(ratio n)`` of the n train
examples (``masks[k, i]``) and has a quality ``q_k ~ Normal(0, quality_sd^2)`` on the logit
scale (models differ in accuracy, as real ones do). Correctness is drawn as::

    correct_test[k, j]  ~ Bernoulli(sigmoid(a_j + q_k + b_ij masks[k, i(j)]))
    correct_train[k, i] ~ Bernoulli(sigmoid(c_i + q_k + d_i masks[k, i]))

with one planted source ``i(j)`` and logit effect ``b_ij > 0`` for each of ``n_pairs`` test
examples (``b = 0`` for the others), and a logit effect ``d_i > 0`` for ``n_memorized`` train
examples (``d = 0`` for the others). As ``q_k`` is independent of the subsets, the true
influence of a planted pair is exactly::

    infl(i, j) = E_q[sigmoid(a_j + q + b_ij)] - E_q[sigmoid(a_j + q)]

(Gauss-Hermite quadrature, exact to ~1e-15), and likewise memorization. Every other pair is
null: its true influence is 0, or ``-infl(i(j), j) / (n - 1)`` when j has a planted source
``i(j) != i`` (fixed-size subsets make i and i(j) slightly less likely to be drawn together),
never positive. The standard error of an estimate with ``K_in = ratio K`` in-models is
``sqrt(p_in (1 - p_in) / K_in + p_out (1 - p_out) / K_out)`` with the true rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from tailscope.errors import DataError

__all__ = ["PlantedRun", "planted_run"]

_QUADRATURE_NODES = 80


@dataclass(frozen=True, eq=False)
class PlantedRun:
    """A synthetic run and its truth.

    Attributes:
        masks: (K, n) bool subset masks.
        correct_train: (K, n) bool.
        correct_test: (K, t) bool.
        pair_train, pair_test: (P,) int64 planted pairs (each test example at most once).
        pair_effect: (P,) logit effects b.
        pair_influence: (P,) true influence of the planted pairs.
        pair_se: (P,) standard error of their estimates with K_in = ratio K.
        memorized: (M,) int64 train examples with a planted memorization effect.
        memorization: (n,) true memorization of every train example (0 when not planted).
        memorization_se: (n,) standard error of every memorization estimate.
        test_logit: (t,) a_j; train_logit: (n,) c_i; quality: (K,) q_k.
    """

    masks: np.ndarray
    correct_train: np.ndarray
    correct_test: np.ndarray
    pair_train: np.ndarray
    pair_test: np.ndarray
    pair_effect: np.ndarray
    pair_influence: np.ndarray
    pair_se: np.ndarray
    memorized: np.ndarray
    memorization: np.ndarray
    memorization_se: np.ndarray
    test_logit: np.ndarray
    train_logit: np.ndarray
    quality: np.ndarray

    def is_planted(self, train: ArrayLike, test: ArrayLike) -> np.ndarray:
        """Whether each (train, test) pair (broadcast arrays) is a planted one."""
        train, test = np.broadcast_arrays(np.asarray(train), np.asarray(test))
        source = np.full(self.correct_test.shape[1], -1, dtype=np.int64)
        source[self.pair_test] = self.pair_train
        return source[test] == train

    def true_influence(self, train: ArrayLike, test: ArrayLike) -> np.ndarray:
        """Exact true influence of each (train, test) pair (broadcast arrays), float64."""
        train, test = np.broadcast_arrays(np.asarray(train), np.asarray(test))
        n_train = self.masks.shape[1]
        source = np.full(self.correct_test.shape[1], -1, dtype=np.int64)
        value = np.zeros(self.correct_test.shape[1])
        source[self.pair_test] = self.pair_train
        value[self.pair_test] = self.pair_influence
        has_source = source[test] >= 0
        planted = source[test] == train
        return np.where(
            planted, value[test], np.where(has_source, -value[test] / (n_train - 1), 0.0)
        )


def _gaussian_mean(logit: np.ndarray, sd: float) -> np.ndarray:
    """``E[sigmoid(logit + q)]``, ``q ~ Normal(0, sd^2)``, by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite.hermgauss(_QUADRATURE_NODES)
    shifted = np.asarray(logit, dtype=np.float64)[..., None] + np.sqrt(2.0) * sd * nodes
    return expit(shifted) @ weights / np.sqrt(np.pi)


def _difference(base: np.ndarray, effect: np.ndarray, sd: float, k_in: float, k_out: float):
    """True ``p_in - p_out`` and the standard error of its estimate."""
    p_in, p_out = _gaussian_mean(base + effect, sd), _gaussian_mean(base, sd)
    se = np.sqrt(p_in * (1 - p_in) / k_in + p_out * (1 - p_out) / k_out)
    return p_in - p_out, se


def _check_count(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise DataError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_range(value: object, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise DataError(f"{name} must be a finite (low, high) pair with low <= high")
    return low, high


def _check_normal(value: object, name: str) -> tuple[float, float]:
    try:
        mean, sd = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a (mean, sd) pair of numbers, got {value!r}") from None
    if not (np.isfinite(mean) and np.isfinite(sd) and sd >= 0):
        raise DataError(f"{name} must be a finite (mean, sd) pair with sd >= 0")
    return mean, sd


def planted_run(
    n_models: int = 256,
    n_train: int = 3000,
    n_test: int = 1500,
    n_pairs: int = 60,
    *,
    n_memorized: int = 0,
    ratio: float = 0.7,
    quality_sd: float = 0.4,
    test_logit: tuple[float, float] = (1.5, 1.5),
    train_logit: tuple[float, float] = (2.5, 1.5),
    planted_logit: tuple[float, float] = (-3.0, 0.0),
    planted_effect: tuple[float, float] = (1.0, 5.0),
    random_state: int | np.random.Generator | None = None,
) -> PlantedRun:
    """Draw a synthetic run with planted influence pairs and memorized examples.

    Args:
        n_models, n_train, n_test: K, n, t.
        n_pairs: planted (train, test) pairs: distinct test examples, distinct train
            examples (at most min(n, t)).
        n_memorized: train examples with a planted memorization effect (distinct from the
            planted pairs' train examples when possible).
        ratio: subset share; every model trains on exactly ``round(ratio n)`` examples.
        quality_sd: standard deviation of the models' logit quality q_k.
        test_logit, train_logit: (mean, sd) of the normal logits a_j and c_i of the others.
        planted_logit: (low, high) of the uniform base logits of the planted test and
            memorized train examples (hard examples).
        planted_effect: (low, high) of the uniform logit effects b and d.
        random_state: seed or generator.

    Returns:
        A :class:`PlantedRun`.
    """
    n_models = _check_count(n_models, "n_models", 2)
    n_train = _check_count(n_train, "n_train", 2)
    n_test = _check_count(n_test, "n_test", 1)
    n_pairs = _check_count(n_pairs, "n_pairs", 0)
    n_memorized = _check_count(n_memorized, "n_memorized", 0)
    if n_pairs > min(n_train, n_test):
        raise DataError(f"n_pairs must be <= min(n_train, n_test), got {n_pairs}")
    if n_memorized > n_train:
        raise DataError(f"n_memorized must be <= n_train, got {n_memorized}")
    share = float(ratio)
    subset = round(share * n_train)
    if not 0 < subset < n_train:
        raise DataError(f"ratio must leave 0 < round(ratio n) < n, got ratio={ratio!r}")
    sd = float(quality_sd)
    if not (np.isfinite(sd) and sd >= 0):
        raise DataError(f"quality_sd must be >= 0, got {quality_sd!r}")
    test_mean, test_sd = _check_normal(test_logit, "test_logit")
    train_mean, train_sd = _check_normal(train_logit, "train_logit")
    base_low, base_high = _check_range(planted_logit, "planted_logit")
    effect_low, effect_high = _check_range(planted_effect, "planted_effect")
    rng = np.random.default_rng(random_state)

    masks = np.zeros((n_models, n_train), dtype=bool)
    for k in range(n_models):
        masks[k, rng.choice(n_train, subset, replace=False)] = True
    quality = rng.normal(0.0, sd, n_models)

    a = rng.normal(test_mean, test_sd, n_test)
    pair_test = rng.choice(n_test, n_pairs, replace=False).astype(np.int64)
    order = rng.permutation(n_train).astype(np.int64)
    pair_train = order[:n_pairs]
    a[pair_test] = rng.uniform(base_low, base_high, n_pairs)
    b = rng.uniform(effect_low, effect_high, n_pairs)
    logits = a[None, :] + quality[:, None]
    logits[:, pair_test] += b[None, :] * masks[:, pair_train]
    correct_test = rng.random((n_models, n_test)) < expit(logits)

    c = rng.normal(train_mean, train_sd, n_train)
    rest = order[n_pairs:] if n_memorized <= n_train - n_pairs else order
    memorized = np.sort(rest[:n_memorized])
    c[memorized] = rng.uniform(base_low, base_high, n_memorized)
    d = np.zeros(n_train)
    d[memorized] = rng.uniform(effect_low, effect_high, n_memorized)
    logits = c[None, :] + quality[:, None] + d[None, :] * masks
    correct_train = rng.random((n_models, n_train)) < expit(logits)

    k_in = n_models * subset / n_train
    k_out = n_models - k_in
    infl, infl_se = _difference(a[pair_test], b, sd, k_in, k_out)
    mem, mem_se = _difference(c, d, sd, k_in, k_out)
    return PlantedRun(
        masks=masks,
        correct_train=correct_train,
        correct_test=correct_test,
        pair_train=pair_train,
        pair_test=pair_test,
        pair_effect=b,
        pair_influence=infl,
        pair_se=infl_se,
        memorized=memorized.astype(np.int64),
        memorization=np.where(d > 0, mem, 0.0),
        memorization_se=mem_se,
        test_logit=a,
        train_logit=c,
        quality=quality,
    )
