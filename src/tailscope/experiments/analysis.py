"""Every analysis of one run, computed once, as the report shows it.

:func:`analyze` gathers what a reader of a run wants to see (its set-up and the noise level
its K allows, the memorization distribution, the high-influence pairs beside their noise
floor, the split-half agreement, the saved comparisons and retraining experiments, the
paper's released pairs) into one :class:`RunAnalysis`. The report only renders it; tests
assert on it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tailscope.estimate import Estimates
from tailscope.experiments.agreement import agreement, split_half
from tailscope.experiments.distribution import (
    MemorizationDistribution,
    extremes,
    memorization_distribution,
)
from tailscope.experiments.findings import Findings, findings
from tailscope.experiments.pairs import mirror_pair_count, pair_summary
from tailscope.experiments.released import load_released_pairs, released_test_size
from tailscope.experiments.removal import InfluencerRemoval, MarginalUtility
from tailscope.run import Run

__all__ = ["RunAnalysis", "SavedScores", "analyze"]

#: Above this worst-case standard error, selecting pairs at infl >= 0.15 is mostly noise.
NOISY_SE = 0.05


@dataclass(frozen=True, eq=False)
class SavedScores:
    """The score tables :func:`tailscope.experiments.scores` saved, and its LiRA record."""

    train: pd.DataFrame
    test: pd.DataFrame
    lira: dict | None


@dataclass(frozen=True, eq=False)
class RunAnalysis:
    """What :func:`analyze` found; every table the report shows, as data.

    Attributes:
        run: the run analysed; estimates: its :class:`Estimates` (analysis ratio).
        class_names: one name per class.
        infl, mem: the pair thresholds; fdr: the FDR level of findings (None: the paper's
            plain rule).
        overview: set-up and noise level (K, ratio(s), precision, accuracy, SEs, ...).
        distribution: the memorization distribution; most, least: positions of the most
            and least memorized train examples.
        pairs: the high-influence pairs (:meth:`Estimates.high_influence_pairs`: findings at
            ``fdr``); pair_summary: the paper's summary row of them; mirror_pairs: the pairs
            that pass the plain rule with the sign of the influence flipped (the noise floor).
        findings: findings beside the plain and mirrored counts and the K an effect needs,
            for memorization and pairs (None with ``fdr=None``).
        split_half: agreement of two random halves of the models (None below 4 models);
            halves_mem: the two halves' memorization, for a scatter plot.
        comparisons: saved ``tailscope compare`` rows.
        marginal_utility, influencers: saved retraining experiments, or None.
        scores: the saved per-example score tables (``tailscope scores``), or None.
        released: ``(name, pairs, summary)`` of each released pair file shown.
    """

    run: Run
    estimates: Estimates
    class_names: list[str]
    infl: float
    mem: float
    fdr: float | None
    overview: dict[str, object]
    distribution: MemorizationDistribution
    most: np.ndarray
    least: np.ndarray
    pairs: pd.DataFrame
    pair_summary: dict[str, float]
    mirror_pairs: int
    findings: Findings | None
    split_half: dict[str, float] | None
    halves_mem: tuple[np.ndarray, np.ndarray] | None
    comparisons: list[dict] = field(default_factory=list)
    marginal_utility: MarginalUtility | None = None
    influencers: InfluencerRemoval | None = None
    scores: SavedScores | None = None
    released: list[tuple[str, pd.DataFrame, dict]] = field(default_factory=list)

    @property
    def noisy(self) -> bool:
        """Whether one estimate's worst-case SE is above :data:`NOISY_SE`."""
        return self.overview["worst_se"] > NOISY_SE


def analyze(
    run: Run,
    *,
    infl: float = 0.15,
    mem: float = 0.25,
    fdr: float | None = 0.1,
    released: Sequence[str | os.PathLike] = (),
    gallery_size: int = 24,
    split_half_seed: int = 0,
) -> RunAnalysis:
    """Every analysis of ``run`` (its finished models of the analysis ratio)."""
    est = run.estimate()
    spec = run.spec
    n_classes = int(max(est.y_train.max(), est.y_test.max())) + 1
    class_names = list(spec.dataset.class_names)
    if len(class_names) < n_classes:
        class_names = [str(c) for c in range(n_classes)]
    thresholds = sorted({mem, 0.25, 0.5, 0.75})
    distribution = memorization_distribution(
        est.memorization,
        est.memorization_se,
        est.y_train,
        n_classes=len(class_names),
        thresholds=thresholds,
    )
    most, least = extremes(est.memorization, gallery_size)
    found = None
    if fdr is not None:
        ratio = spec.analysis_ratio or spec.ratios[0]
        found = findings(est, infl=infl, mem=mem, fdr=fdr, ratio=ratio)
        pairs, mirror = found.pair_table, found.pairs.mirror
    else:
        pairs = est.high_influence_pairs(infl=infl, mem=mem, fdr=None)
        mirror = mirror_pair_count(est, infl=infl, mem=mem) if len(pairs) else 0
    halves = split_half(est, random_state=split_half_seed) if est.n_models >= 4 else None
    saved_mu = run.store.load_result("marginal_utility")
    saved_influencers = run.store.load_result("remove_influencers")
    return RunAnalysis(
        run=run,
        estimates=est,
        class_names=class_names,
        infl=infl,
        mem=mem,
        fdr=fdr,
        overview=_overview(run, est),
        distribution=distribution,
        most=most,
        least=least,
        pairs=pairs,
        pair_summary=pair_summary(pairs["train_pos"], pairs["test_pos"], len(est.y_test)),
        mirror_pairs=mirror,
        findings=found,
        split_half=None if halves is None else agreement(*halves, infl=infl, mem=mem, fdr=fdr),
        halves_mem=None if halves is None else tuple(h.memorization for h in halves),
        comparisons=(run.store.load_result("agreement") or {}).get("comparisons", []),
        marginal_utility=None if saved_mu is None else MarginalUtility.from_dict(saved_mu),
        influencers=(
            None if saved_influencers is None else InfluencerRemoval.from_dict(saved_influencers)
        ),
        scores=_saved_scores(run),
        released=[_released(Path(p)) for p in released],
    )


def _saved_scores(run: Run) -> SavedScores | None:
    train, test = run.store.load_result("train_scores"), run.store.load_result("test_scores")
    if train is None or test is None:
        return None
    return SavedScores(train, test, run.store.load_result("lira"))


def _overview(run: Run, est: Estimates) -> dict[str, object]:
    spec = run.spec
    k = est.n_models
    ratio = run.spec.analysis_ratio or spec.ratios[0]
    # Worst case of the binary SE formula at p_in = p_out = 1/2, with the run's in/out split.
    worst_se = float(np.sqrt(0.25 / (ratio * k) + 0.25 / ((1 - ratio) * k)))
    return {
        "dataset": spec.dataset.name,
        "n_train": int(est.y_train.size),
        "n_test": int(est.y_test.size),
        "recipe": dict(spec.recipe),
        "models": k,
        "models_planned": spec.n_models,
        "ratios": list(spec.ratios),
        "analysis_ratio": ratio,
        "precision": spec.precision,
        "test_accuracy": float(np.mean(est.correct_test)),
        "mean_mem_se": float(np.nanmean(est.memorization_se)),
        "worst_se": worst_se,
    }


def _released(path: Path) -> tuple[str, pd.DataFrame, dict]:
    frame = load_released_pairs(path)
    summary = pair_summary(frame["train_index"], frame["test_index"], released_test_size(path))
    return path.stem, frame, summary
