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

Results are plain data (``to_dict``/``from_dict``) so a run can keep them as JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from tqdm.auto import tqdm

from tailscope._checks import check_positions
from tailscope.data import features
from tailscope.engine import train_models
from tailscope.errors import DataError
from tailscope.models import Recipe

__all__ = [
    "INFLUENCERS_FILE",
    "MARGINAL_UTILITY_FILE",
    "InfluencerRemoval",
    "MarginalUtility",
    "interval",
    "marginal_utility",
    "removal_masks",
    "remove_influencers",
    "run_marginal_utility",
    "run_remove_influencers",
]

#: Where a run keeps each experiment's result (JSON, inside the run directory).
MARGINAL_UTILITY_FILE = "marginal_utility.json"
INFLUENCERS_FILE = "remove_influencers.json"

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
    recipe: Recipe,
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    mem: ArrayLike,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    n_repeats: int = 3,
    random_state: int | None = 0,
    device: str = "cpu",
    progress: bool = False,
    callback: Callable[[MarginalUtility], object] | None = None,
    n_models_estimated: int | None = None,
) -> MarginalUtility:
    """Retrain without the examples with ``mem >= theta`` and without as many random ones.

    Trains ``R`` models on the full train set, then for every theta ``R`` models without the
    examples with ``mem >= theta`` and ``R`` without as many random examples (a theta that
    removes nothing reuses the full-set models). Undefined (NaN) ``mem`` is never removed.

    Args:
        recipe: the learning algorithm (usually the run's).
        x_train, y_train, x_test, y_test: scaled features (n, ...) / (t, ...) and labels.
        mem: (n,) memorization estimates.
        thresholds: the thetas.
        n_repeats: R, models per condition (>= 2 for confidence intervals).
        random_state: seeds the models and the random removals.
        device: torch device to train on.
        progress: show a progress bar over conditions.
        callback: called with the result so far after every theta (e.g. to save it).
        n_models_estimated: recorded with the result (models behind ``mem``).
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    mem = np.asarray(mem, dtype=np.float64)
    n_train = len(y_train)
    if mem.shape != (n_train,):
        raise DataError(
            f"mem must have shape ({n_train},) (one per train example), got {mem.shape}"
        )
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if len(thresholds) == 0 or not np.isfinite(thresholds).all():
        raise DataError("thresholds must be one or more finite numbers")
    n_repeats = _check_repeats(n_repeats)
    rng = np.random.default_rng(random_state)
    seeds = rng.integers(0, 2**31 - 1, size=n_repeats)
    defined = np.nan_to_num(mem, nan=-np.inf)

    def accuracy(masks: np.ndarray, model_seeds: np.ndarray) -> np.ndarray:
        out = train_models(
            recipe, x_train, y_train, x_test, y_test, masks, model_seeds, device=device
        )
        return out.correct_test.mean(axis=1)

    with tqdm(total=1 + len(thresholds), desc="marginal utility", disable=not progress) as bar:
        baseline = accuracy(np.ones((n_repeats, n_train), dtype=bool), seeds)
        bar.update()
        n_removed, targeted, random = [], [], []
        for theta in thresholds:
            remove = np.flatnonzero(defined >= theta)
            n_removed.append(len(remove))
            if len(remove) == 0:
                targeted.append(baseline)
                random.append(baseline)
            else:
                tgt_masks, rnd_masks = removal_masks(n_train, remove, n_repeats, rng)
                both = accuracy(np.concatenate([tgt_masks, rnd_masks]), np.tile(seeds, 2))
                targeted.append(both[:n_repeats])
                random.append(both[n_repeats:])
            bar.update()
            result = MarginalUtility(
                thresholds=thresholds[: len(n_removed)],
                n_removed=np.asarray(n_removed, dtype=np.int64),
                n_train=n_train,
                baseline=baseline,
                targeted=np.stack(targeted),
                random=np.stack(random),
                n_models_estimated=n_models_estimated,
                random_state=random_state,
            )
            if callback is not None:
                callback(result)
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
    recipe: Recipe,
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    pair_train: ArrayLike,
    pair_test: ArrayLike,
    *,
    n_repeats: int = 3,
    random_state: int | None = 0,
    device: str = "cpu",
    progress: bool = False,
) -> InfluencerRemoval:
    """Retrain on S, on S without the pairs' train examples, and on S without as many random
    ones; measure accuracy on the pairs' test examples and on the rest of the test set.

    Args:
        recipe: the learning algorithm (usually the run's).
        x_train, y_train, x_test, y_test: scaled features and labels.
        pair_train, pair_test: (p,) train and test *positions* of the pairs.
        n_repeats: R, models per condition (>= 2 for confidence intervals).
        random_state: seeds the models and the random removal.
        device: torch device to train on.
        progress: show a progress bar over conditions.
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    n_train, n_test = len(y_train), len(y_test)
    influencers = np.unique(
        check_positions(np.asarray(pair_train).reshape(-1), n_train, "pair_train")
    )
    influenced = np.unique(check_positions(np.asarray(pair_test).reshape(-1), n_test, "pair_test"))
    if len(influencers) == 0 or len(influenced) == 0:
        raise DataError("there are no pairs: nothing to remove")
    n_repeats = _check_repeats(n_repeats)
    rng = np.random.default_rng(random_state)
    seeds = rng.integers(0, 2**31 - 1, size=n_repeats)
    targeted, random = removal_masks(n_train, influencers, n_repeats, rng)
    is_influenced = np.zeros(n_test, dtype=bool)
    is_influenced[influenced] = True

    accuracy: dict[str, dict[str, np.ndarray]] = {}
    conditions = {
        "full": np.ones((n_repeats, n_train), dtype=bool),
        "without_influencers": targeted,
        "without_random": random,
    }
    for condition, masks in tqdm(
        conditions.items(), desc="removing influencers", disable=not progress
    ):
        correct = train_models(
            recipe, x_train, y_train, x_test, y_test, masks, seeds, device=device
        ).correct_test
        accuracy[condition] = {
            "all": correct.mean(axis=1),
            "influenced": correct[:, is_influenced].mean(axis=1),
            "rest": correct[:, ~is_influenced].mean(axis=1)
            if (~is_influenced).any()
            else np.full(n_repeats, np.nan),
        }
    return InfluencerRemoval(
        influencers=influencers,
        influenced=influenced,
        n_train=n_train,
        n_test=n_test,
        accuracy=accuracy,
        random_state=random_state,
    )


# ---- on a run -----------------------------------------------------------------------------------
def run_marginal_utility(
    run,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    n_repeats: int = 3,
    random_state: int | None = 0,
    device: str = "cpu",
    progress: bool = False,
) -> MarginalUtility:
    """:func:`marginal_utility` with a :class:`tailscope.Run`'s recipe, data and estimates;
    the result is saved into the run (``marginal_utility.json``) after every theta."""
    est = run.estimate()
    data = run.dataset
    x_train, x_test = features(data, run.spec["dataset"]["scaling"])
    return marginal_utility(
        run.recipe,
        x_train,
        data.y_train,
        x_test,
        data.y_test,
        est.memorization,
        thresholds,
        n_repeats=n_repeats,
        random_state=random_state,
        device=device,
        progress=progress,
        callback=lambda result: run.store.write_json(MARGINAL_UTILITY_FILE, result.to_dict()),
        n_models_estimated=est.n_models,
    )


def run_remove_influencers(
    run,
    *,
    infl: float = 0.15,
    mem: float = 0.25,
    n_repeats: int = 3,
    random_state: int | None = 0,
    device: str = "cpu",
    progress: bool = False,
) -> InfluencerRemoval:
    """:func:`remove_influencers` on a :class:`tailscope.Run`'s high-influence pairs
    (``infl``, ``mem``, same label); the result is saved into the run
    (``remove_influencers.json``, positions in the run's order)."""
    est = run.estimate()
    pairs = est.high_influence_pairs(infl=infl, mem=mem)
    if not len(pairs):
        raise DataError(
            f"{run.path} has no high-influence pairs at infl >= {infl}, mem >= {mem}: nothing "
            "to remove"
        )
    data = run.dataset
    x_train, x_test = features(data, run.spec["dataset"]["scaling"])
    result = remove_influencers(
        run.recipe,
        x_train,
        data.y_train,
        x_test,
        data.y_test,
        pd.Index(est.train_index).get_indexer(pairs["train"]),
        pd.Index(est.test_index).get_indexer(pairs["test"]),
        n_repeats=n_repeats,
        random_state=random_state,
        device=device,
        progress=progress,
    )
    record = result.to_dict() | {"infl": infl, "mem": mem, "n_models_estimated": est.n_models}
    run.store.write_json(INFLUENCERS_FILE, record)
    return result


# ---- helpers ---------------------------------------------------------------------------------
def _check_repeats(n_repeats: object) -> int:
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, int | np.integer) or n_repeats < 1:
        raise DataError(f"n_repeats must be a positive integer, got {n_repeats!r}")
    return int(n_repeats)


def _check_record(record: object, experiment: str) -> None:
    if not isinstance(record, dict) or record.get("experiment") != experiment:
        raise DataError(f"not a saved {experiment} result")


def _put(row: dict, name: str, ci: dict[str, float]) -> None:
    row[name] = ci["mean"]
    row[f"{name}_low"] = ci["low"]
    row[f"{name}_high"] = ci["high"]
