"""Agreement between two sets of estimates of the same training set.

Two runs of one recipe with different seeds (or the two halves of one run's models, which
are independent runs of K/2 models) estimate the same quantities; two architectures
estimate related ones. For estimates ``a`` and ``b`` of memorization this reports

- Pearson and Spearman correlation of ``mem`` over the examples both estimate;
- Jaccard similarity ``|A & B| / |A | B|`` of the sets ``mem >= 0.25`` and of the selected
  high-influence pairs;
- the mean absolute difference ``mean |a_i - b_i|`` beside its value expected from the
  standard errors alone, ``mean_i sqrt(2/pi) sqrt(se_a_i^2 + se_b_i^2)`` (the mean of
  ``|N(0, se_a^2 + se_b^2)|``): when both estimate the same truth they match; a larger
  observed value means the two disagree beyond noise;
- replication: the share of ``a``'s findings (FDR-controlled memorization and pairs) that
  ``b`` confirms on its own models (same sign, one-sided exact p < 0.05). Findings are
  claims; this is how often an independent run backs them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from tailscope.errors import DataError
from tailscope.estimate import Estimates

__all__ = [
    "agreement",
    "compare_runs",
    "jaccard",
    "memorization_agreement",
    "split_half",
]


def jaccard(a: Iterable, b: Iterable) -> float:
    """``|A & B| / |A | B|`` of two collections of hashable items; 1.0 when both are empty."""
    a, b = set(a), set(b)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def memorization_agreement(
    mem_a: ArrayLike,
    se_a: ArrayLike,
    mem_b: ArrayLike,
    se_b: ArrayLike,
    *,
    mem: float = 0.25,
) -> dict[str, float]:
    """Correlations, Jaccard of ``mem >= mem`` sets and mean |difference| of two (n,)
    memorization vectors with their standard errors (NaN entries are left out)."""
    arrays = [np.asarray(x, dtype=np.float64) for x in (mem_a, se_a, mem_b, se_b)]
    n = arrays[0].shape
    for name, x in zip(("mem_a", "se_a", "mem_b", "se_b"), arrays, strict=True):
        if x.ndim != 1 or x.shape != n:
            raise DataError(f"{name} must be 1-D with the shape of mem_a {n}, got {x.shape}")
    mem_a, se_a, mem_b, se_b = arrays
    both = ~(np.isnan(mem_a) | np.isnan(mem_b))
    a, b = mem_a[both], mem_b[both]
    if len(a) < 2:
        raise DataError("fewer than 2 examples have both estimates; nothing to compare")
    constant = np.ptp(a) == 0 or np.ptp(b) == 0
    expected = np.sqrt(2 / np.pi) * np.sqrt(se_a[both] ** 2 + se_b[both] ** 2)
    return {
        "examples": len(a),
        "pearson": float("nan") if constant else float(stats.pearsonr(a, b)[0]),
        "spearman": float("nan") if constant else float(stats.spearmanr(a, b)[0]),
        "jaccard_mem": jaccard(np.flatnonzero(mem_a >= mem), np.flatnonzero(mem_b >= mem)),
        "mem_set_a": int(np.count_nonzero(mem_a >= mem)),
        "mem_set_b": int(np.count_nonzero(mem_b >= mem)),
        "mean_abs_diff": float(np.abs(a - b).mean()),
        "expected_mean_abs_diff": float(np.nanmean(expected)),
        "mean_abs_diff_se": float(np.abs(a - b).std(ddof=1) / np.sqrt(len(a))),
    }


def agreement(
    a: Estimates,
    b: Estimates,
    *,
    infl: float = 0.15,
    mem: float = 0.25,
    fdr: float | None = 0.1,
    alpha: float = 0.05,
) -> dict[str, float]:
    """Agreement of two runs' estimates on the same dataset (see the module docstring).

    Both must name the same train examples with the same labels, and the same test examples.
    Returns :func:`memorization_agreement`'s numbers plus ``pairs_a``, ``pairs_b`` and
    ``jaccard_pairs`` of the high-influence pairs (``infl``, ``mem``, same label; findings at
    ``fdr``, or the plain rule with ``fdr=None``), and the replication of ``a``'s findings in
    ``b``: ``mem_findings_a`` (``mem_q <= fdr``, ``mem >= mem``) and ``mem_replicated``, the
    share of them ``b`` confirms (same sign, one-sided exact p < ``alpha``);
    ``pairs_replicated`` likewise for the pairs (NaN where ``a`` has none).
    """
    for what in ("train_index", "y_train", "test_index", "y_test"):
        x, y = getattr(a, what), getattr(b, what)
        if x.shape != y.shape or not np.array_equal(x, y):
            raise DataError(f"the two runs differ in {what}: they are not of the same dataset")
    row = memorization_agreement(
        a.memorization, a.memorization_se, b.memorization, b.memorization_se, mem=mem
    )
    pairs_a = a.high_influence_pairs(infl=infl, mem=mem, fdr=fdr)
    pairs_b = b.high_influence_pairs(infl=infl, mem=mem, fdr=fdr)
    row["models_a"], row["models_b"] = a.n_models, b.n_models
    row["pairs_a"], row["pairs_b"] = len(pairs_a), len(pairs_b)
    row["jaccard_pairs"] = jaccard(_pair_keys(pairs_a), _pair_keys(pairs_b))
    if fdr is not None:
        found = np.flatnonzero(a.memorization_result.findings(fdr, at_least=mem))
        result_b = b.memorization_result
        confirmed = (result_b.value[found] > 0) & (result_b.p[found] < alpha)
        row["mem_findings_a"] = len(found)
        row["mem_replicated"] = float(confirmed.mean()) if len(found) else float("nan")
        infl_b, p_b = b.pair_statistics(pairs_a["train_pos"], pairs_a["test_pos"])
        confirmed = (infl_b > 0) & (p_b < alpha)
        row["pairs_replicated"] = float(confirmed.mean()) if len(pairs_a) else float("nan")
    return row


def split_half(estimates: Estimates, random_state: int | None = 0) -> tuple[Estimates, Estimates]:
    """Split a run's models at random into two halves, each an independent run of K/2
    models (the subsets were drawn independently), for split-half reliability."""
    if estimates.n_models < 4:
        raise DataError(f"split-half needs at least 4 models, got {estimates.n_models}")
    order = np.random.default_rng(random_state).permutation(estimates.n_models)
    halves = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    return tuple(estimates.select(h) for h in halves)


def compare_runs(
    run, other, *, infl: float = 0.15, mem: float = 0.25, fdr: float | None = 0.1
) -> dict[str, float]:
    """:func:`agreement` of two :class:`tailscope.Run` objects, saved into ``run`` (result
    ``agreement``: one entry per other run, replaced when compared again)."""
    row = agreement(run.estimate(), other.estimate(), infl=infl, mem=mem, fdr=fdr)
    row = {"other": str(other.path), "infl": infl, "mem": mem, "fdr": fdr} | row
    saved = run.store.load_result("agreement") or {}
    kept = [c for c in saved.get("comparisons", []) if c.get("other") != row["other"]]
    run.store.save_result("agreement", {"comparisons": [*kept, row]})
    return row


def _pair_keys(pairs: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(pairs["train_pos"].astype(int), pairs["test_pos"].astype(int), strict=True))
