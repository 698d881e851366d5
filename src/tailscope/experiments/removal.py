"""Retraining without chosen train examples: marginal utility and removing the influencers.

Both experiments of the paper retrain the run's recipe on the *whole* train set minus some
examples, R times with different seeds, and compare with removing as many random examples:

- **Marginal utility** (Feldman & Zhang 2020, Fig. 2): for each threshold theta remove the
  examples with ``mem >= theta``; the test accuracy lost shows what the memorized examples
  were worth, beyond what as many random examples were.
- **Removing the influencers** (the paper's CIFAR-100 table): remove the train examples of
  the high-influence pairs; the accuracy lost on the influenced test examples, against the
  rest of the test set, shows that the pairs' influence is real.

Designs are paired: repeat r of every condition (full set, targeted removal, random removal)
trains from the same seed, so differences between conditions are taken repeat by repeat.
Every accuracy comes with a t confidence interval over the R repeats:
``mean +- t_{R-1} * sd / sqrt(R)`` (NaN for R = 1).

Both retrain through :meth:`tailscope.Run.retrain`, so they honour the run's recipe,
precision and models per step and take an executor as training does (``executor="ray"``).
Results are plain data (``to_dict``/``from_dict``); a run keeps them as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats

from tailscope._checks import check_positions, check_scalar
from tailscope.errors import DataError
from tailscope.execute import Executor
from tailscope.run import Run

__all__ = [
    "InfluencerRemoval",
    "MarginalUtility",
    "interval",
    "marginal_utility",
    "removal_masks",
    "remove_influencers",
]

DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def interval(values: ArrayLike, confidence: float = 0.95) -> dict[str, float]:
    """Mean of R values with its standard error and t confidence interval.

    Returns ``mean``, ``se = sd / sqrt(R)`` (sample sd, ddof=1) and ``low``/``high`` =
    ``mean -+ t_{(1+confidence)/2, R-1} * se``; ``se``, ``low``, ``high`` are NaN for R < 2.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) == 0:
        raise DataError("interval needs at least one value")
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "se": float("nan"), "low": float("nan"), "high": float("nan")}
    se = float(values.std(ddof=1) / np.sqrt(len(values)))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * se
    return {"mean": mean, "se": se, "low": mean - half, "high": mean + half}


def removal_masks(
    n_train: int, remove: ArrayLike, n_repeats: int, random_state: int | np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Masks for "everything but ``remove``" and for "everything but as many random examples".

    Returns ``(targeted, random)``, each (R, n) bool: every row of ``targeted`` is False
    exactly at ``remove``; row r of ``random`` is False at ``len(remove)`` positions drawn
    uniformly without replacement from all n, independently for every row.
    """
    remove = check_positions(np.asarray(remove).reshape(-1), n_train, "remove")
    if len(remove) >= n_train:
        raise DataError(
            f"cannot remove {len(remove)} of {n_train} train examples: none would be left"
        )
    rng = np.random.default_rng(random_state)
    targeted = np.ones((n_repeats, n_train), dtype=bool)
    targeted[:, remove] = False
    random = np.ones((n_repeats, n_train), dtype=bool)
    for row in random:
        row[rng.choice(n_train, size=len(remove), replace=False)] = False
    return targeted, random


# ---- marginal utility -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MarginalUtility:
    """Test accuracy of models retrained without the examples with ``mem >= theta``.

    Attributes:
        thresholds: (T,) thetas.
        n_removed: (T,) examples with ``mem >= theta`` (removed).
        n_train: train examples before removal.
        baseline: (R,) test accuracy of the models trained on every example.
        targeted: (T, R) test accuracy without the examples with ``mem >= theta``.
        random: (T, R) test accuracy without as many random examples (same seeds).
        n_models_estimated: models of the run that ``mem`` was estimated from.
        random_state: seed of the whole experiment.
    """

    thresholds: np.ndarray
    n_removed: np.ndarray
    n_train: int
    baseline: np.ndarray
    targeted: np.ndarray
    random: np.ndarray
    n_models_estimated: int | None = None
    random_state: int | None = None

    @property
    def n_repeats(self) -> int:
        return len(self.baseline)

    @property
    def fraction_removed(self) -> np.ndarray:
        return self.n_removed / self.n_train

    def frame(self, confidence: float = 0.95) -> pd.DataFrame:
        """One row per theta: removed count and fraction, then mean, ``low``/``high`` CI of the
        targeted and random accuracies, and the paired difference random - targeted."""
        rows = []
        for t, theta in enumerate(self.thresholds):
            tgt = interval(self.targeted[t], confidence)
            rnd = interval(self.random[t], confidence)
            gap = interval(self.random[t] - self.targeted[t], confidence)
            rows.append(
                {
                    "theta": float(theta),
                    "removed": int(self.n_removed[t]),
                    "fraction_removed": float(self.fraction_removed[t]),
                    "targeted": tgt["mean"],
                    "targeted_low": tgt["low"],
                    "targeted_high": tgt["high"],
                    "random": rnd["mean"],
                    "random_low": rnd["low"],
                    "random_high": rnd["high"],
                    "gap": gap["mean"],
                    "gap_low": gap["low"],
                    "gap_high": gap["high"],
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {
            "experiment": "marginal_utility",
            "thresholds": self.thresholds.tolist(),
            "n_removed": self.n_removed.tolist(),
            "n_train": int(self.n_train),
            "baseline": self.baseline.tolist(),
            "targeted": self.targeted.tolist(),
            "random": self.random.tolist(),
            "n_models_estimated": self.n_models_estimated,
            "random_state": self.random_state,
        }

    @classmethod
    def from_dict(cls, record: dict) -> MarginalUtility:
        _check_record(record, "marginal_utility")
        n_repeats = len(record["baseline"])
        return cls(
            thresholds=np.asarray(record["thresholds"], dtype=np.float64),
            n_removed=np.asarray(record["n_removed"], dtype=np.int64),
            n_train=int(record["n_train"]),
            baseline=np.asarray(record["baseline"], dtype=np.float64),
            targeted=np.asarray(record["targeted"], dtype=np.float64).reshape(-1, n_repeats),
            random=np.asarray(record["random"], dtype=np.float64).reshape(-1, n_repeats),
            n_models_estimated=record.get("n_models_estimated"),
            random_state=record.get("random_state"),
        )


def marginal_utility(
    run: Run,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    mem: ArrayLike | None = None,
    n_repeats: int = 3,
    random_state: int | None = 0,
    executor: str | Executor = "local",
    device: str | None = None,
    progress: bool = False,
    **executor_options: object,
) -> MarginalUtility:
    """Retrain without the examples with ``mem >= theta`` and without as many random ones.

    Trains ``R`` models on the full train set, then for every theta ``R`` models without the
    examples with ``mem >= theta`` and ``R`` without as many random examples (a theta that
    removes nothing reuses the full-set models); undefined (NaN) ``mem`` is never removed.
    All of it goes to ``executor`` in one job. The result is saved into the run
    (``marginal_utility``).

    Args:
        run: the run; its recipe, precision and models per step train the models.
        thresholds: the thetas.
        mem: (n,) memorization to threshold (default: the run's estimates).
        n_repeats: R, models per condition (>= 2 for confidence intervals).
        random_state: seeds the models and the random removals.
        executor, device, executor_options: as for :meth:`tailscope.Run.train`.
        progress: show a progress bar over the models.
    """
    n_train = run.spec.dataset.n_train
    n_estimated = None
    if mem is None:
        est = run.estimate()
        mem, n_estimated = est.memorization, est.n_models
    mem = np.asarray(mem, dtype=np.float64)
    if mem.shape != (n_train,):
        raise DataError(
            f"mem must have shape ({n_train},) (one per train example), got {mem.shape}"
        )
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if len(thresholds) == 0 or not np.isfinite(thresholds).all():
        raise DataError("thresholds must be one or more finite numbers")
    n_repeats = check_scalar(n_repeats, "n_repeats", int, min_val=1)
    rng = np.random.default_rng(random_state)
    seeds = rng.integers(0, 2**31 - 1, size=n_repeats)
    defined = np.nan_to_num(mem, nan=-np.inf)

    removed = [np.flatnonzero(defined >= theta) for theta in thresholds]
    masks = [np.ones((n_repeats, n_train), dtype=bool)]
    for remove in removed:
        if len(remove):
            masks.extend(removal_masks(n_train, remove, n_repeats, rng))
    masks = np.concatenate(masks)
    accuracy = run.retrain(
        masks,
        np.resize(seeds, len(masks)),
        executor=executor,
        device=device,
        progress=progress,
        **executor_options,
    ).correct_test.mean(axis=1)
    baseline, rest = accuracy[:n_repeats], accuracy[n_repeats:].reshape(-1, n_repeats)
    targeted, random, used = [], [], 0
    for remove in removed:
        if len(remove) == 0:
            targeted.append(baseline)
            random.append(baseline)
        else:
            targeted.append(rest[used])
            random.append(rest[used + 1])
            used += 2
    result = MarginalUtility(
        thresholds=thresholds,
        n_removed=np.array([len(r) for r in removed], dtype=np.int64),
        n_train=n_train,
        baseline=baseline,
        targeted=np.stack(targeted),
        random=np.stack(random),
        n_models_estimated=n_estimated,
        random_state=random_state,
    )
    if run.store.writable:
        run.store.save_result("marginal_utility", result.to_dict())
    return result


# ---- removing the influencers -----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class InfluencerRemoval:
    """Accuracy of models trained on S, on S minus the influencers, and on S minus as many
    random examples, on the influenced test examples and on the rest.

    Attributes:
        influencers: (a,) train positions removed (the pairs' train examples).
        influenced: (b,) test positions influenced (the pairs' test examples).
        n_train, n_test: split sizes.
        accuracy: ``{condition: {subset: (R,) accuracies}}`` for conditions ``full``,
            ``without_influencers``, ``without_random`` and subsets ``all``, ``influenced``,
            ``rest``.
        random_state: seed of the whole experiment.
    """

    influencers: np.ndarray
    influenced: np.ndarray
    n_train: int
    n_test: int
    accuracy: dict[str, dict[str, np.ndarray]]
    random_state: int | None = None

    CONDITIONS = ("full", "without_influencers", "without_random")
    SUBSETS = ("all", "influenced", "rest")

    @property
    def n_repeats(self) -> int:
        return len(self.accuracy["full"]["all"])

    def frame(self, confidence: float = 0.95) -> pd.DataFrame:
        """One row per condition and per paired difference from ``full``; for each test
        subset the mean accuracy and its CI (``<subset>``, ``<subset>_low``, ``<subset>_high``)."""
        rows = []
        full = self.accuracy["full"]
        for condition in self.CONDITIONS:
            row: dict[str, object] = {"condition": condition}
            for subset in self.SUBSETS:
                _put(row, subset, interval(self.accuracy[condition][subset], confidence))
            rows.append(row)
        for condition in self.CONDITIONS[1:]:
            row = {"condition": f"full - {condition}"}
            for subset in self.SUBSETS:
                drop = full[subset] - self.accuracy[condition][subset]
                _put(row, subset, interval(drop, confidence))
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {
            "experiment": "remove_influencers",
            "influencers": self.influencers.tolist(),
            "influenced": self.influenced.tolist(),
            "n_train": int(self.n_train),
            "n_test": int(self.n_test),
            "accuracy": {
                c: {s: v.tolist() for s, v in subsets.items()}
                for c, subsets in self.accuracy.items()
            },
            "random_state": self.random_state,
        }

    @classmethod
    def from_dict(cls, record: dict) -> InfluencerRemoval:
        _check_record(record, "remove_influencers")
        return cls(
            influencers=np.asarray(record["influencers"], dtype=np.int64),
            influenced=np.asarray(record["influenced"], dtype=np.int64),
            n_train=int(record["n_train"]),
            n_test=int(record["n_test"]),
            accuracy={
                c: {s: np.asarray(v, dtype=np.float64) for s, v in subsets.items()}
                for c, subsets in record["accuracy"].items()
            },
            random_state=record.get("random_state"),
        )


def remove_influencers(
    run: Run,
    *,
    infl: float = 0.15,
    mem: float = 0.25,
    fdr: float | None = 0.1,
    pairs: pd.DataFrame | None = None,
    n_repeats: int = 3,
    random_state: int | None = 0,
    executor: str | Executor = "local",
    device: str | None = None,
    progress: bool = False,
    **executor_options: object,
) -> InfluencerRemoval:
    """Retrain on S, on S without the pairs' train examples, and on S without as many random
    ones; measure accuracy on the pairs' test examples and on the rest of the test set.

    Args:
        run: the run; its recipe, precision and models per step train the models.
        infl, mem, fdr: select the run's high-influence pairs
            (:meth:`~tailscope.estimate.Estimates.high_influence_pairs`: findings at ``fdr``,
            or the paper's plain rule with ``fdr=None``).
        pairs: instead, the pairs to remove, with columns ``train_pos`` and ``test_pos``.
        n_repeats: R, models per condition (>= 2 for confidence intervals).
        random_state: seeds the models and the random removal.
        executor, device, executor_options: as for :meth:`tailscope.Run.train`.
        progress: show a progress bar over the models.

    The result is saved into the run (``remove_influencers``, positions in the run's order).
    """
    n_models_estimated = None
    if pairs is None:
        est = run.estimate()
        pairs = est.high_influence_pairs(infl=infl, mem=mem, fdr=fdr)
        n_models_estimated = est.n_models
        if not len(pairs):
            rule = "the plain rule" if fdr is None else f"FDR {fdr}"
            raise DataError(
                f"{run.path} has no high-influence pairs at infl >= {infl}, mem >= {mem} "
                f"({rule}): nothing to remove"
            )
    n_train, n_test = run.spec.dataset.n_train, run.spec.dataset.n_test
    influencers = np.unique(check_positions(np.asarray(pairs["train_pos"]), n_train, "train_pos"))
    influenced = np.unique(check_positions(np.asarray(pairs["test_pos"]), n_test, "test_pos"))
    if len(influencers) == 0 or len(influenced) == 0:
        raise DataError("there are no pairs: nothing to remove")
    n_repeats = check_scalar(n_repeats, "n_repeats", int, min_val=1)
    rng = np.random.default_rng(random_state)
    seeds = rng.integers(0, 2**31 - 1, size=n_repeats)
    targeted, random = removal_masks(n_train, influencers, n_repeats, rng)
    full = np.ones((n_repeats, n_train), dtype=bool)
    correct = run.retrain(
        np.concatenate([full, targeted, random]),
        np.tile(seeds, 3),
        executor=executor,
        device=device,
        progress=progress,
        **executor_options,
    ).correct_test.reshape(3, n_repeats, n_test)
    is_influenced = np.zeros(n_test, dtype=bool)
    is_influenced[influenced] = True
    accuracy = {
        condition: {
            "all": rows.mean(axis=1),
            "influenced": rows[:, is_influenced].mean(axis=1),
            "rest": rows[:, ~is_influenced].mean(axis=1)
            if (~is_influenced).any()
            else np.full(n_repeats, np.nan),
        }
        for condition, rows in zip(InfluencerRemoval.CONDITIONS, correct, strict=True)
    }
    result = InfluencerRemoval(
        influencers=influencers,
        influenced=influenced,
        n_train=n_train,
        n_test=n_test,
        accuracy=accuracy,
        random_state=random_state,
    )
    if run.store.writable:
        record = result.to_dict() | {"infl": infl, "mem": mem, "fdr": fdr}
        run.store.save_result(
            "remove_influencers", record | {"n_models_estimated": n_models_estimated}
        )
    return result


# ---- helpers ---------------------------------------------------------------------------------
def _check_record(record: object, experiment: str) -> None:
    if not isinstance(record, dict) or record.get("experiment") != experiment:
        raise DataError(f"not a saved {experiment} result")


def _put(row: dict, name: str, ci: dict[str, float]) -> None:
    row[name] = ci["mean"]
    row[f"{name}_low"] = ci["low"]
    row[f"{name}_high"] = ci["high"]
