"""Estimates: the memorization and influence estimates of one run, with their SEs.

Arrays are indexed by position in the run (0..n-1 train, 0..t-1 test); the tables this
object exports name examples by their index in the source dataset (``train_index``,
``test_index``), which equals the position unless the run used a subset.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from tailscope.estimate import InfluenceResult, influence, memorization
from tailscope.store import RunStore

__all__ = ["Estimates"]


class Estimates:
    """Estimates from the finished models of a run.

    Attributes:
        masks: (K, n) bool plan rows of the finished models.
        correct_train: (K, n) bool; correct_test: (K, t) bool.
        y_train: (n,) labels; y_test: (t,) labels.
        train_index, test_index: source-dataset index of every position.
    """

    def __init__(
        self,
        masks: np.ndarray,
        correct_train: np.ndarray,
        correct_test: np.ndarray,
        y_train: np.ndarray,
        y_test: np.ndarray,
        train_index: np.ndarray | None = None,
        test_index: np.ndarray | None = None,
    ) -> None:
        self.masks = masks
        self.correct_train = correct_train
        self.correct_test = correct_test
        self.y_train = np.asarray(y_train)
        self.y_test = np.asarray(y_test)
        self.train_index = (
            np.arange(len(self.y_train)) if train_index is None else np.asarray(train_index)
        )
        self.test_index = (
            np.arange(len(self.y_test)) if test_index is None else np.asarray(test_index)
        )

    @classmethod
    def from_store(cls, store: RunStore) -> Estimates:
        models = store.finished()
        masks = store.masks if len(models) == store.n_models else store.masks[models]
        return cls(
            masks,
            store.read("correct_train", models),
            store.read("correct_test", models),
            store.y_train,
            store.y_test,
            store.train_index,
            store.test_index,
        )

    @property
    def n_models(self) -> int:
        return self.masks.shape[0]

    # ---- memorization ------------------------------------------------------------------
    @cached_property
    def _memorization(self) -> tuple[np.ndarray, np.ndarray]:
        return memorization(self.masks, self.correct_train)

    @property
    def memorization(self) -> np.ndarray:
        """(n,) ``P[h(x_i)=y_i | i in S] - P[h(x_i)=y_i | i not in S]``; NaN if undefined."""
        return self._memorization[0]

    @property
    def memorization_se(self) -> np.ndarray:
        """(n,) standard error of :attr:`memorization`."""
        return self._memorization[1]

    def memorization_frame(self) -> pd.DataFrame:
        """One row per train example: index (source), label, mem, mem_se."""
        return pd.DataFrame(
            {
                "index": self.train_index,
                "label": self.y_train,
                "mem": self.memorization,
                "mem_se": self.memorization_se,
            }
        )

    # ---- influence ---------------------------------------------------------------------
    def influence(self, **kwargs: object) -> InfluenceResult:
        """:func:`tailscope.estimate.influence` on this run's masks and test correctness."""
        return influence(self.masks, self.correct_test, **kwargs)

    def high_influence_pairs(
        self, infl: float = 0.15, mem: float = 0.25, same_label: bool = True
    ) -> pd.DataFrame:
        """Train/test pairs with ``infl(i, j) >= infl`` and ``mem(i) >= mem`` (and, by
        default, the same label), as the paper selects them.

        Only train rows with ``mem(i) >= mem`` are scanned, so this needs memory for the
        selected pairs, never for the n x t matrix. Columns: train, test (source indices),
        label, infl, infl_se, mem, mem_se; sorted by decreasing infl.
        """
        mem_values = self.memorization
        rows = np.flatnonzero(np.nan_to_num(mem_values, nan=-np.inf) >= mem)
        columns = ["train", "test", "label", "infl", "infl_se", "mem", "mem_se"]
        if len(rows) == 0:
            return pd.DataFrame({c: [] for c in columns})
        pairs = self.influence(threshold=infl, train_index=rows).pairs
        tr, te = np.asarray(pairs.train), np.asarray(pairs.test)
        keep = self.y_train[tr] == self.y_test[te] if same_label else np.ones(len(tr), bool)
        tr, te = tr[keep], te[keep]
        frame = pd.DataFrame(
            {
                "train": self.train_index[tr],
                "test": self.test_index[te],
                "label": self.y_train[tr],
                "infl": np.asarray(pairs.infl)[keep],
                "infl_se": np.asarray(pairs.se)[keep],
                "mem": mem_values[tr],
                "mem_se": self.memorization_se[tr],
            }
        )
        return frame.sort_values(["infl", "test"], ascending=[False, True], ignore_index=True)

    def summary(self, infl: float = 0.15, mem: float = 0.25) -> dict[str, float]:
        """Headline numbers: models, mean SE, fraction with mem >= 0.25/0.5, pair counts."""
        m = self.memorization
        defined = ~np.isnan(m)
        pairs = self.high_influence_pairs(infl=infl, mem=mem)
        return {
            "models": self.n_models,
            "train_examples": len(m),
            "test_examples": len(self.y_test),
            "test_accuracy": float(np.mean(self.correct_test)),
            "undefined": int(np.count_nonzero(~defined)),
            "mean_mem": float(np.nanmean(m)) if defined.any() else float("nan"),
            "mean_mem_se": float(np.nanmean(self.memorization_se))
            if defined.any()
            else float("nan"),
            "frac_mem_ge_0.25": float(np.mean(m[defined] >= 0.25)) if defined.any() else 0.0,
            "frac_mem_ge_0.5": float(np.mean(m[defined] >= 0.5)) if defined.any() else 0.0,
            "pairs": len(pairs),
            "pairs_unique_test": int(pairs["test"].nunique()),
            "pairs_unique_train": int(pairs["train"].nunique()),
        }
