"""Membership inference with the likelihood-ratio attack LiRA (Carlini et al. 2022, "Membership
Inference Attacks From First Principles"), evaluated leave-one-model-out on the pool.

The statistic is the logit margin ``phi[k, i] = z_y - logsumexp_{c != y} z_c`` of model k on
train example i (``sigmoid(phi)`` is the probability of the label: the paper's "logit
scaling"). Shadow models that trained on i give the "in" sample of phi, the others the "out"
sample; each is fitted with a Gaussian: counts ``n``, means ``mu`` and unbiased variances
``s**2``. For an observed ``x = phi`` of a target model, the attack scores (higher = member):

- ``online``:  log N(x; mu_in, v_in) - log N(x; mu_out, v_out), the likelihood ratio;
- ``offline``: -log P(Z >= x), Z ~ N(mu_out, v_out): the one-sided test on the out fit alone;
- ``online_fixed`` / ``offline_fixed``: the same with one global variance per side shared by
  every example (the pooled within-example variance), the paper's choice for few shadows;
- ``global``:  x itself, the loss-threshold attack of Yeom et al. (no shadow models; the
  cross-entropy loss ``log(1 + exp(-phi))`` decreases in phi, so one threshold serves both).

Variance floor: an example's variance ``v`` is ``max(s**2, var_floor * pooled)`` when it has
at least 2 shadow models on that side, else the pooled variance of that side. A handful of
nearly equal phi (a small set, or float16 values that round alike) would otherwise give a
variance near 0 and likelihood ratios of any size; ``var_floor = 0.1`` keeps the per-example
standard deviation above ~1/3 of the pooled one and rarely binds with adequate data.
Every variance is also at least ``MIN_VARIANCE = 1e-4`` (a standard deviation of 0.01 nats,
far below any real spread of phi), for a degenerate pool whose pooled variance is 0.

Leave-one-model-out evaluation: each target model k in turn is attacked by the other K - 1
models as shadows. Its fits are the pool's minus k's own contribution (counts, means and
sums of squared deviations downdated in closed form, vectorized over targets and examples),
so nothing is refitted in a loop. The positives are k's members, the negatives the rest; a
(target, example) pair is evaluated when the shadows hold i at least once in and once out.
All pairs of all targets are pooled into one ROC per variant, as in the paper's code.

Multi-ratio runs: pass the models of one ratio. A model trained on 90% of the data has
larger phi on every example than one trained on 10%, whether or not it trained on i, and
it trained on i more often, so shadows of mixed ratios confound membership with the ratio
(simulated with no membership effect and phi rising by 2 standard deviations from ratio
0.2 to 0.8, such a pool shows an online AUC of 0.72). Per-ratio shadows
with one pooled ROC are not the answer either: the plug-in log-likelihood ratio is offset
by the unequal in/out sample sizes (at ratio 0.8 the in-fit is the sharper one), and the
high-ratio pairs, mostly members, get the larger offset (same simulation: 0.53). Within one
ratio the offset is common to all pairs (0.50 there), the paper's setting at ratio 0.5.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import special

from tailscope._checks import check_choice, check_scalar
from tailscope.errors import DataError
from tailscope.estimate._validation import check_like_masks
from tailscope.scores._checks import (
    as_bool,
    as_float_chunk,
    as_matrix,
    chunk_columns,
    column_chunks,
)
from tailscope.scores.roc import Roc, roc, threshold_at_fpr

__all__ = [
    "DEFAULT_VAR_FLOOR",
    "VARIANTS",
    "GaussianFits",
    "LiraEvaluation",
    "gaussian_fits",
    "lira_evaluation",
    "lira_loo_scores",
    "lira_scores",
]

VARIANTS = ("online", "online_fixed", "offline", "offline_fixed", "global")
DEFAULT_VAR_FLOOR = 0.1
#: Absolute variance floor (phi in nats; a standard deviation of 0.01), for degenerate pools
#: whose pooled variance is 0 or undefined.
MIN_VARIANCE = 1e-4
# A leave-one-out chunk makes ~10 float64 temporaries of its size: 2**22 entries (~340 MB).
_LOO_ENTRIES = 2**22
#: Without ``targets``, at most this many (target, example) pairs are scored at once
#: (the evaluation holds about 13 bytes per pair); more targets are thinned evenly.
MAX_PAIRS = 2**26


@dataclass(frozen=True, eq=False)
class GaussianFits:
    """Per-example Gaussian fits of phi over shadow models, in and out.

    Attributes:
        n_in, n_out: (n,) int64 shadow models that did / did not train on the example.
        mean_in, mean_out: (n,) sample means (NaN where the count is 0).
        ss_in, ss_out: (n,) sums of squared deviations from the mean.
        pooled_var_in, pooled_var_out: the pooled within-example variances,
            ``sum_i ss_i / sum_i (n_i - 1)`` over examples with ``n_i >= 2``.
    """

    n_in: np.ndarray
    mean_in: np.ndarray
    ss_in: np.ndarray
    n_out: np.ndarray
    mean_out: np.ndarray
    ss_out: np.ndarray
    pooled_var_in: float = field(default=np.nan)
    pooled_var_out: float = field(default=np.nan)

    @property
    def var_in(self) -> np.ndarray:
        """(n,) unbiased in-variance, NaN with fewer than 2 in-models."""
        return _variance(self.ss_in, self.n_in)

    @property
    def var_out(self) -> np.ndarray:
        """(n,) unbiased out-variance, NaN with fewer than 2 out-models."""
        return _variance(self.ss_out, self.n_out)


def _variance(ss: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= 2, ss / (n - 1), np.nan)


def _pooled(ss_total: ArrayLike, df_total: ArrayLike) -> np.ndarray:
    ss_total, df_total = np.asarray(ss_total, float), np.asarray(df_total, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(df_total > 0, ss_total / df_total, np.nan)


def _check_inputs(masks: ArrayLike, phi: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    masks = as_matrix(masks, "masks")
    phi = as_matrix(phi, "phi")
    check_like_masks(masks, phi, "phi")
    return masks, phi


def _side_stats(x: np.ndarray, side: np.ndarray):
    """Counts, means and sums of squared deviations of ``x`` over the rows where ``side``."""
    n = side.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(side, x, 0.0).sum(axis=0) / n
    ss = np.where(side, (x - np.nan_to_num(mean)) ** 2, 0.0).sum(axis=0)
    return n.astype(np.int64), mean, ss


def gaussian_fits(
    masks: ArrayLike, phi: ArrayLike, *, chunk_size: int | None = None
) -> GaussianFits:
    """Fit phi of every example over the models that did (in) and did not (out) train on it.

    Args:
        masks: (K, n) bool or 0/1 subset membership of the shadow models (may be a memmap).
        phi: (K, n) float logit margins of the same models on the train examples.
        chunk_size: examples per chunk; by default about 2**24 / K.

    Returns:
        :class:`GaussianFits` with per-example counts, means, sums of squares, pooled variances.
    """
    masks, phi = _check_inputs(masks, phi)
    n_models, n = masks.shape
    out = {key: np.empty(n) for key in ("mean_in", "ss_in", "mean_out", "ss_out")}
    n_in, n_out = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for cols in column_chunks(n, chunk_columns(n_models, chunk_size)):
        m = as_bool(masks[:, cols], "masks")
        x = as_float_chunk(phi[:, cols], "phi")
        n_in[cols], out["mean_in"][cols], out["ss_in"][cols] = _side_stats(x, m)
        n_out[cols], out["mean_out"][cols], out["ss_out"][cols] = _side_stats(x, ~m)
    return GaussianFits(
        n_in=n_in,
        n_out=n_out,
        **out,
        pooled_var_in=float(_pooled(out["ss_in"].sum(), np.maximum(n_in - 1, 0).sum())),
        pooled_var_out=float(_pooled(out["ss_out"].sum(), np.maximum(n_out - 1, 0).sum())),
    )


def _pooled_floor(pooled):
    """A pooled variance of at least :data:`MIN_VARIANCE` (also where it is undefined)."""
    return np.fmax(pooled, MIN_VARIANCE)


def _effective_var(s2, n, pooled, var_floor: float):
    """Per-example variance with the floor: ``max(s**2, var_floor * pooled)``, or the pooled
    variance with fewer than 2 shadow models on that side (where ``s2`` is not used)."""
    pooled = _pooled_floor(pooled)
    with np.errstate(invalid="ignore"):
        return np.where(n >= 2, np.maximum(s2, var_floor * pooled), pooled)


def _score(
    variant: str,
    x: np.ndarray,
    side_in: tuple,
    side_out: tuple,
    pooled_in,
    pooled_out,
    var_floor: float,
    offline_as_z: bool = False,
) -> np.ndarray:
    """Scores of observations ``x`` given (n, mean, s**2) of each side; NaN where undefined."""
    if variant == "global":
        return x.astype(np.float64)
    n_in, mean_in, s2_in = side_in
    n_out, mean_out, s2_out = side_out
    fixed = variant.endswith("_fixed")
    if fixed:
        pooled_in, pooled_out = _pooled_floor(pooled_in), _pooled_floor(pooled_out)
    v_out = pooled_out if fixed else _effective_var(s2_out, n_out, pooled_out, var_floor)
    v_out = np.broadcast_to(v_out, np.shape(x))
    with np.errstate(divide="ignore", invalid="ignore"):
        if variant.startswith("offline"):
            z = (x - mean_out) / np.sqrt(v_out)
            score = z if offline_as_z else -special.log_ndtr(-z)
            return np.where(n_out >= 1, score, np.nan)
        v_in = pooled_in if fixed else _effective_var(s2_in, n_in, pooled_in, var_floor)
        score = (
            0.5 * np.log(v_out / v_in)
            - (x - mean_in) ** 2 / (2 * v_in)
            + (x - mean_out) ** 2 / (2 * v_out)
        )
    return np.where((n_in >= 1) & (n_out >= 1), score, np.nan)


def _check_variant(variant: str) -> str:
    return str(check_choice(variant, "variant", VARIANTS))


def _check_floor(var_floor: float) -> float:
    if not np.isfinite(var_floor) or not 0 < var_floor <= 1:
        raise DataError(f"var_floor must be in (0, 1], got {var_floor!r}")
    return float(var_floor)


def lira_scores(
    observed: ArrayLike,
    fits: GaussianFits,
    variant: str = "online",
    *,
    var_floor: float = DEFAULT_VAR_FLOOR,
) -> np.ndarray:
    """LiRA scores (n,) of one target model's phi (n,) against shadow fits; higher = member.

    ``variant`` is one of :data:`VARIANTS` (see the module docstring). The offline score is
    ``-log P(Z >= x)`` under the out fit. NaN where the variant's fits are undefined.
    """
    variant = _check_variant(variant)
    var_floor = _check_floor(var_floor)
    x = np.asarray(observed, dtype=np.float64)
    if x.shape != fits.n_in.shape:
        raise DataError(f"observed must have shape {fits.n_in.shape}, got {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("observed contains NaN or infinite values")
    return _score(
        variant,
        x,
        (fits.n_in, fits.mean_in, fits.var_in),
        (fits.n_out, fits.mean_out, fits.var_out),
        fits.pooled_var_in,
        fits.pooled_var_out,
        var_floor,
    )


def _downdate(n, mean, ss, x, remove):
    """Per pair, the side's (n, mean, s**2) without observation ``x`` where ``remove``.

    Removing x from n values with mean m and sum of squares ss leaves ``n - 1`` values with
    mean ``m - (x - m) / (n - 1)`` and sum of squares ``ss - (x - m)**2 n / (n - 1)``
    (Welford's update in reverse); s**2 is that over ``n - 2``. Where fewer than 2 values
    remain, s**2 is not used (and may be inf or NaN).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / (n - 1)
        d = x - mean
        mean2 = np.where(remove, mean - d * inv, mean)
        s2 = np.where(remove, np.maximum(ss - d * d * (n * inv), 0.0) / (n - 2), ss * inv)
    n2 = n - remove
    mean2[n2 <= 0] = np.nan
    return n2, mean2, s2


def _removed_ss(n, mean, x, remove):
    """How much the sum of squares of each pair's side drops when x is removed, and the
    drop of its degrees of freedom ``max(n - 1, 0)``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        drop = np.where(remove & (n >= 2), (x - mean) ** 2 * (n / (n - 1)), 0.0)
    return drop, remove & (n >= 2)


def _loo_chunks(masks, phi, fits, targets, chunk_size) -> Iterator[tuple]:
    """Per column chunk: (cols, x, member, in-fits, out-fits) with each target left out."""
    width = chunk_columns(len(targets), chunk_size, _LOO_ENTRIES)
    for cols in column_chunks(masks.shape[1], width):
        m = as_bool(masks[targets, cols], "masks")
        x = as_float_chunk(phi[targets, cols], "phi")
        side_in = _downdate(fits.n_in[cols], fits.mean_in[cols], fits.ss_in[cols], x, m)
        side_out = _downdate(fits.n_out[cols], fits.mean_out[cols], fits.ss_out[cols], x, ~m)
        yield cols, x, m, side_in, side_out


@dataclass(frozen=True, eq=False)
class LiraEvaluation:
    """Leave-one-model-out evaluation of the LiRA variants and the global attack.

    Attributes:
        roc: variant -> :class:`~tailscope.scores.roc.Roc` over all evaluated pairs.
        example_tpr: variant -> (n,) per-example TPR at the global threshold whose FPR is
            ``example_fpr``: the fraction of the target models that trained on i whose
            attack flags i (NaN where no target model trained on i).
        example_fpr: the FPR of that global threshold.
        targets: (T,) the target models; n_pairs / n_excluded: (target, example) pairs
            evaluated / left out (shadows never held i in, or never out);
            n_members: positives among the evaluated pairs.
        var_floor: the variance floor used.
    """

    roc: dict[str, Roc]
    example_tpr: dict[str, np.ndarray]
    example_fpr: float
    targets: np.ndarray
    n_pairs: int
    n_excluded: int
    n_members: int
    var_floor: float

    def frame(self) -> pd.DataFrame:
        """One row per variant: ``auc``, ``auc_se`` and ``tpr@{fpr}`` for each FPR."""
        rows = []
        for variant, r in self.roc.items():
            row = {"variant": variant, "auc": r.auc, "auc_se": r.auc_se}
            row.update({f"tpr@{f:g}": t for f, t in zip(r.fprs, r.tprs, strict=True)})
            rows.append(row)
        return pd.DataFrame(rows)

    def roc_curve(self, variant: str = "online") -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, tpr)`` of a variant's ROC curve, FPR increasing, for log-log axes."""
        r = self.roc[_check_variant(variant)]
        return r.fpr, r.tpr


def _check_targets(targets, n_models: int, n: int, max_pairs: int) -> np.ndarray:
    if targets is None:
        count = max(1, min(n_models, max_pairs // max(n, 1)))
        return np.unique(np.linspace(0, n_models - 1, count).round().astype(np.int64))
    values = np.asarray(targets)
    if values.ndim != 1 or not len(values) or not np.issubdtype(values.dtype, np.integer):
        raise DataError("targets must be a non-empty 1-D array of model indices")
    if values.min() < 0 or values.max() >= n_models:
        raise DataError(f"targets must lie in [0, {n_models}), got {values.min()}..{values.max()}")
    if len(np.unique(values)) != len(values):
        raise DataError("targets has duplicate entries")
    return np.sort(values).astype(np.int64)


@dataclass(frozen=True, eq=False)
class _LeaveOneOut:
    """What every leave-one-model-out pass needs: the pool's fits, the targets, their
    leave-one-out pooled variances (T, 1), membership and evaluable pairs (T, n)."""

    masks: np.ndarray
    phi: np.ndarray
    fits: GaussianFits
    targets: np.ndarray
    chunk_size: int | None
    pooled_in: np.ndarray
    pooled_out: np.ndarray
    member: np.ndarray
    valid: np.ndarray

    def fill(self, variant: str, var_floor: float, out: np.ndarray, offline_as_z: bool) -> None:
        """Write the (T, n) scores of ``variant`` into ``out`` (NaN where not evaluable)."""
        for cols, x, _, side_in, side_out in _loo_chunks(
            self.masks, self.phi, self.fits, self.targets, self.chunk_size
        ):
            score = _score(
                variant,
                x,
                side_in,
                side_out,
                self.pooled_in,
                self.pooled_out,
                var_floor,
                offline_as_z,
            )
            out[:, cols] = np.where(self.valid[:, cols], score, np.nan)


def _leave_one_out(masks, phi, targets, chunk_size) -> _LeaveOneOut:
    """One pass over the data: membership, evaluable pairs, and each target's pooled
    variances without its own contribution."""
    masks, phi = _check_inputs(masks, phi)
    n_models, n = masks.shape
    targets = _check_targets(targets, n_models, n, MAX_PAIRS)
    fits = gaussian_fits(masks, phi, chunk_size=chunk_size)
    member = np.empty((len(targets), n), dtype=bool)
    valid = np.empty((len(targets), n), dtype=bool)
    totals = {
        "ss_in": np.full(len(targets), fits.ss_in.sum()),
        "df_in": np.full(len(targets), float(np.maximum(fits.n_in - 1, 0).sum())),
        "ss_out": np.full(len(targets), fits.ss_out.sum()),
        "df_out": np.full(len(targets), float(np.maximum(fits.n_out - 1, 0).sum())),
    }
    for cols, x, m, side_in, side_out in _loo_chunks(masks, phi, fits, targets, chunk_size):
        member[:, cols] = m
        valid[:, cols] = (side_in[0] >= 1) & (side_out[0] >= 1)
        for side, remove in (("in", m), ("out", ~m)):
            n_side = getattr(fits, f"n_{side}")[cols]
            drop, df_drop = _removed_ss(n_side, getattr(fits, f"mean_{side}")[cols], x, remove)
            totals[f"ss_{side}"] -= drop.sum(axis=1)
            totals[f"df_{side}"] -= df_drop.sum(axis=1)
    return _LeaveOneOut(
        masks=masks,
        phi=phi,
        fits=fits,
        targets=targets,
        chunk_size=chunk_size,
        pooled_in=_pooled(totals["ss_in"], totals["df_in"])[:, None],
        pooled_out=_pooled(totals["ss_out"], totals["df_out"])[:, None],
        member=member,
        valid=valid,
    )


def lira_loo_scores(
    masks: ArrayLike,
    phi: ArrayLike,
    variant: str = "online",
    *,
    targets: ArrayLike | None = None,
    var_floor: float = DEFAULT_VAR_FLOOR,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-model-out LiRA scores: each target attacked by the other models.

    ``scores[t, i]`` equals :func:`lira_scores` of ``phi[targets[t]]`` against
    :func:`gaussian_fits` of all models but ``targets[t]``; NaN where those shadows never
    hold i in or never out. Returns ``(scores, member)``, float64 and bool of shape (T, n)
    (``member[t, i]``: target t trained on i). Arguments as for :func:`lira_evaluation`.
    """
    variant = _check_variant(variant)
    var_floor = _check_floor(var_floor)
    loo = _leave_one_out(masks, phi, targets, chunk_size)
    scores = np.empty(loo.member.shape)
    loo.fill(variant, var_floor, scores, offline_as_z=False)
    return scores, loo.member


def lira_evaluation(
    masks: ArrayLike,
    phi: ArrayLike,
    *,
    variants: Sequence[str] = VARIANTS,
    targets: ArrayLike | None = None,
    fprs: Sequence[float] = (0.001, 0.01),
    example_fpr: float = 0.001,
    var_floor: float = DEFAULT_VAR_FLOOR,
    chunk_size: int | None = None,
) -> LiraEvaluation:
    """Attack every target model with the others as shadows; ROC and per-example TPR.

    Args:
        masks: (K, n) subset membership; phi: (K, n) logit margins on the train examples.
        variants: which of :data:`VARIANTS` to evaluate.
        targets: indices of the target models; by default all K, thinned evenly to at most
            :data:`MAX_PAIRS` / n targets.
        fprs: the FPRs at which each ROC reports the TPR.
        example_fpr: FPR of the global threshold behind the per-example TPRs.
        var_floor: relative variance floor (see the module docstring).
        chunk_size: examples per chunk; by default about 2**24 / T.

    Returns:
        A :class:`LiraEvaluation`. Memory: about 13 bytes per (target, example) pair. The
        offline scores are ranked by their z-score ``(x - mu_out) / sqrt(v_out)``, which
        orders pairs exactly as ``-log P(Z >= x)`` and does not underflow in float32.
    """
    variants = [_check_variant(v) for v in variants]
    var_floor = _check_floor(var_floor)
    check_scalar(example_fpr, "example_fpr", float, min_val=0, max_val=1, inclusive=False)
    loo = _leave_one_out(masks, phi, targets, chunk_size)
    positive = loo.member & loo.valid
    negative = ~loo.member & loo.valid
    n_pairs = int(loo.valid.sum())
    n_members = int(positive.sum())
    if n_members == 0 or n_members == n_pairs:
        raise DataError(
            "no (target model, example) pair can be evaluated both as a member and as a "
            "non-member: the shadows must hold each example at least once in and once out"
        )
    k_member = positive.sum(axis=0)
    scores = np.empty(loo.member.shape, dtype=np.float32)
    results: dict[str, Roc] = {}
    example_tpr: dict[str, np.ndarray] = {}
    for variant in variants:
        loo.fill(variant, var_floor, scores, offline_as_z=True)
        pos, neg = np.sort(scores[positive]), np.sort(scores[negative])
        results[variant] = roc(pos, neg, fprs, presorted=True)
        threshold = threshold_at_fpr(neg, example_fpr)
        del pos, neg
        with np.errstate(divide="ignore", invalid="ignore"):
            example_tpr[variant] = np.where(
                k_member > 0, ((scores > threshold) & positive).sum(axis=0) / k_member, np.nan
            )
    return LiraEvaluation(
        roc=results,
        example_tpr=example_tpr,
        example_fpr=float(example_fpr),
        targets=loo.targets,
        n_pairs=n_pairs,
        n_excluded=int(loo.valid.size - n_pairs),
        n_members=n_members,
        var_floor=var_floor,
    )
