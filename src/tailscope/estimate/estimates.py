"""Estimates: the memorization and influence estimates of one run, and its findings.

Arrays are indexed by position in the run (0..n-1 train, 0..t-1 test). The tables this
object exports name examples by their id in the source dataset (``index``, ``train_index``,
``test_index``), which equals the position unless the run used a subset, and carry the
positions too where a caller needs them (``train_pos``, ``test_pos``).

A *finding* is an estimate whose sign the data establish under false-discovery-rate control:
memorization with ``mem_q <= fdr`` (Benjamini-Hochberg over the n train examples), a
high-influence pair with ``q <= fdr`` (over every defined (train, test) pair). With
``fdr=None`` the tables follow the paper's plain thresholds instead.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property

import numpy as np
import pandas as pd

from tailscope.estimate.influence import InfluenceResult, Pairs, influence
from tailscope.estimate.memorization import MemorizationResult, memorization
from tailscope.estimate.significance import fisher_pvalues

__all__ = ["Estimates"]

#: The default FDR level of findings.
DEFAULT_FDR = 0.1


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
        self._findings: dict[tuple, InfluenceResult] = {}

    @property
    def n_models(self) -> int:
        return self.masks.shape[0]

    def select(self, models: np.ndarray) -> Estimates:
        """The estimates of some of the models (``models`` indexes the first axis)."""
        return Estimates(
            np.asarray(self.masks[models]),
            np.asarray(self.correct_train[models]),
            np.asarray(self.correct_test[models]),
            self.y_train,
            self.y_test,
            self.train_index,
            self.test_index,
        )

    # ---- memorization ------------------------------------------------------------------
    @cached_property
    def memorization_result(self) -> MemorizationResult:
        """:func:`~tailscope.estimate.memorization` of this run: values, SEs, p, q, CIs."""
        return memorization(self.masks, self.correct_train)

    @property
    def memorization(self) -> np.ndarray:
        """(n,) ``P[h(x_i)=y_i | i in S] - P[h(x_i)=y_i | i not in S]``; NaN if undefined."""
        return self.memorization_result.value

    @property
    def memorization_se(self) -> np.ndarray:
        """(n,) standard error of :attr:`memorization`."""
        return self.memorization_result.se

    def memorization_frame(self) -> pd.DataFrame:
        """One row per train example: ``index`` (source id), ``label``, ``mem``, ``mem_se``,
        ``mem_low``, ``mem_high``, ``mem_p``, ``mem_q``."""
        return self.memorization_result.to_frame(self.train_index, self.y_train)

    # ---- influence ---------------------------------------------------------------------
    def influence(self, **kwargs: object) -> InfluenceResult:
        """:func:`tailscope.estimate.influence` on this run's masks and test correctness."""
        return influence(self.masks, self.correct_test, **kwargs)

    def influence_findings(
        self, infl: float = 0.15, fdr: float = DEFAULT_FDR, method: str = "bh"
    ) -> InfluenceResult:
        """The pairs Benjamini-Hochberg at level ``fdr`` declares ``infl > 0`` over every
        defined (train, test) pair, with estimates >= ``infl`` (computed once, then kept)."""
        key = (infl, fdr, method)
        if key not in self._findings:
            self._findings[key] = self.influence(threshold=infl, fdr=fdr, method=method)
        return self._findings[key]

    def pair_statistics(
        self, train_pos: np.ndarray, test_pos: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(infl, p)`` of the given pairs, from their counts: the estimate and its one-sided
        exact p-value (NaN where the train example is in every subset or in none)."""
        masks = np.asarray(self.masks[:, np.asarray(train_pos)], dtype=bool)
        correct = np.asarray(self.correct_test[:, np.asarray(test_pos)], dtype=bool)
        k_in = masks.sum(axis=0)
        hits_in = (masks & correct).sum(axis=0)
        counts = hits_in, k_in, correct.sum(axis=0) - hits_in, self.n_models - k_in
        with np.errstate(divide="ignore", invalid="ignore"):
            infl = counts[0] / counts[1] - counts[2] / counts[3]
        return infl, fisher_pvalues(*counts)

    def high_influence_pairs(
        self,
        infl: float = 0.15,
        mem: float = 0.25,
        same_label: bool = True,
        *,
        fdr: float | None = DEFAULT_FDR,
        method: str = "bh",
        mirrored: bool = False,
    ) -> pd.DataFrame:
        """The high-influence pairs: ``infl(i, j) >= infl``, ``mem(i) >= mem`` and (by
        default) the same label.

        With ``fdr`` (the default, 0.1) they are findings: Benjamini-Hochberg (``method="by"``:
        Benjamini-Yekutieli) over every defined (train, test) pair declares the influence
        positive (``q <= fdr``), and over the n train examples the memorization
        (``mem_q <= fdr``); the thresholds then select among the findings. With
        ``fdr=None``, the paper's plain rule: only train rows with ``mem(i) >= mem`` are
        scanned for pairs above ``infl``; ``mirrored=True`` selects with the sign of the
        influence flipped (``infl(i, j) <= -infl``), the noise floor of that rule.

        Columns: train_index, test_index (source ids), train_pos, test_pos, label, infl,
        infl_se, infl_low, infl_high, p, q (NaN without ``fdr``), mem, mem_se, mem_q; sorted
        by decreasing infl (increasing when mirrored). Memory: the kept pairs, never n x t.
        """
        mem_result = self.memorization_result
        mem_values = np.nan_to_num(mem_result.value, nan=-np.inf)
        if fdr is not None:
            if mirrored:
                raise ValueError("mirrored=True is the noise floor of the plain rule: fdr=None")
            pairs = self.influence_findings(infl, fdr, method).pairs
            rows = np.flatnonzero(mem_result.findings(fdr, at_least=mem))
            pairs = pairs.take(np.isin(pairs.train_pos, rows))
        else:
            rows = np.flatnonzero(mem_values >= mem)
            pairs = Pairs.empty()
            if len(rows):
                masks = np.asarray(self.masks[:, rows])
                # Flipping every model's mask of train example i flips the sign of infl(i, .).
                found = influence(~masks if mirrored else masks, self.correct_test, threshold=infl)
                pairs = dataclasses.replace(found.pairs, train_pos=rows[found.pairs.train_pos])
        if same_label:
            pairs = pairs.take(self.y_train[pairs.train_pos] == self.y_test[pairs.test_pos])
        tr, te = pairs.train_pos, pairs.test_pos
        sign = -1 if mirrored else 1
        frame = pd.DataFrame(
            {
                "train_index": self.train_index[tr],
                "test_index": self.test_index[te],
                "train_pos": tr,
                "test_pos": te,
                "label": self.y_train[tr],
                "infl": sign * pairs.infl,
                "infl_se": pairs.se,
                "infl_low": -pairs.high if mirrored else pairs.low,
                "infl_high": -pairs.low if mirrored else pairs.high,
                "p": pairs.p,
                "q": pairs.q,
                "mem": mem_result.value[tr],
                "mem_se": mem_result.se[tr],
                "mem_q": mem_result.q[tr],
            }
        )
        return frame.sort_values(
            ["infl", "test_index"], ascending=[mirrored, True], ignore_index=True
        )

    def summary(self, pairs: pd.DataFrame | None = None) -> dict[str, float]:
        """Headline numbers: models, mean SE, fraction with mem >= 0.25/0.5, memorization
        findings (``mem_q <= 0.1``, mem >= 0.25), and the counts of ``pairs`` (default:
        :meth:`high_influence_pairs`)."""
        result = self.memorization_result
        m = result.value
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
            "mean_mem_se": float(np.nanmean(result.se)) if defined.any() else float("nan"),
            "frac_mem_ge_0.25": float(np.mean(m[defined] >= 0.25)) if defined.any() else 0.0,
            "frac_mem_ge_0.5": float(np.mean(m[defined] >= 0.5)) if defined.any() else 0.0,
            "mem_findings": int(np.count_nonzero(result.findings(DEFAULT_FDR, at_least=0.25))),
            "pairs": len(pairs),
            "pairs_unique_test": int(pairs["test_index"].nunique()),
            "pairs_unique_train": int(pairs["train_index"].nunique()),
        }
