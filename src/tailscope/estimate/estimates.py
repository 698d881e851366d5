"""Estimates: the memorization and influence estimates of one run, with their SEs.

Arrays are indexed by position in the run (0..n-1 train, 0..t-1 test). The tables this
object exports name examples by their id in the source dataset (``index``, ``train_index``,
``test_index``), which equals the position unless the run used a subset, and carry the
positions too where a caller needs them (``train_pos``, ``test_pos``).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from tailscope.estimate.influence import InfluenceResult, influence
from tailscope.estimate.memorization import memorization

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
        self, infl: float = 0.15, mem: float = 0.25, same_label: bool = True, *, mirrored=False
    ) -> pd.DataFrame:
        """Train/test pairs with ``infl(i, j) >= infl`` and ``mem(i) >= mem`` (and, by
        default, the same label), as the paper selects them; ``mirrored=True`` selects with
        the sign of the influence flipped (``infl(i, j) <= -infl``), the noise floor.

        Only train rows with ``mem(i) >= mem`` are scanned, so this needs memory for the
        selected pairs, never for the n x t matrix. Columns: train_index, test_index
        (source ids), train_pos, test_pos, label, infl, infl_se, mem, mem_se; sorted by
        decreasing infl (increasing when mirrored).
        """
        mem_values = self.memorization
        rows = np.flatnonzero(np.nan_to_num(mem_values, nan=-np.inf) >= mem)
        tr = te = np.empty(0, dtype=np.int64)
        value = se = np.empty(0, dtype=np.float32)
        if len(rows):
            masks = np.asarray(self.masks[:, rows])
            # Flipping every model's mask of train example i flips the sign of infl(i, .).
            found = influence(~masks if mirrored else masks, self.correct_test, threshold=infl)
            tr, te = rows[found.pairs.train_pos], found.pairs.test_pos
            value, se = found.pairs.infl, found.pairs.se
        keep = self.y_train[tr] == self.y_test[te] if same_label else np.ones(len(tr), bool)
        tr, te, value, se = tr[keep], te[keep], value[keep], se[keep]
        frame = pd.DataFrame(
            {
                "train_index": self.train_index[tr],
                "test_index": self.test_index[te],
                "train_pos": tr,
                "test_pos": te,
                "label": self.y_train[tr],
                "infl": -value if mirrored else value,
                "infl_se": se,
                "mem": mem_values[tr],
                "mem_se": self.memorization_se[tr],
            }
        )
        return frame.sort_values(
            ["infl", "test_index"], ascending=[mirrored, True], ignore_index=True
        )

    def summary(self, pairs: pd.DataFrame | None = None) -> dict[str, float]:
        """Headline numbers: models, mean SE, fraction with mem >= 0.25/0.5, and the counts
        of ``pairs`` (default: :meth:`high_influence_pairs` at the paper's thresholds)."""
        m = self.memorization
        defined = ~np.isnan(m)
        if pairs is None:
            pairs = self.high_influence_pairs()
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
            "pairs_unique_test": int(pairs["test_index"].nunique()),
            "pairs_unique_train": int(pairs["train_index"].nunique()),
        }
