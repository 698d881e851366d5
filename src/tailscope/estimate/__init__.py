"""Estimators of memorization and influence from the masks and correctness of K models.

``memorization(masks, correct_train)`` gives the (n,) estimates with standard errors, exact
one-sided p-values, BH q-values and confidence intervals; ``influence(masks, correct_test,
top_k=..., threshold=..., fdr=..., dense_path=...)`` computes the (n, t) influence matrix in
chunks and keeps only what was asked for: with ``fdr`` the pairs that Benjamini-Hochberg over
all n x t pairs declares positive. The statistics underneath: ``fisher_pvalues`` (one-sided
exact p-values), ``bh_qvalues`` / ``bh_reject`` (dense BH/BY), ``InfluenceFDR`` (BH/BY over
all pairs, streamed), ``difference_interval`` (confidence intervals), ``models_needed`` /
``detection_power`` (exact power). :class:`Estimates` holds a run's estimates and exports
them as tables. Alternative memorization estimators, measured but not the default:
``covariate_adjusted`` (for model quality), ``margin_based`` (normal fits to the margins),
``shrunk`` (empirical Bayes); see ``benchmarks/bench_efficiency.py``.
"""

from tailscope.estimate._validation import UndefinedEstimateWarning
from tailscope.estimate.efficiency import covariate_adjusted, margin_based, shrunk
from tailscope.estimate.estimates import Estimates
from tailscope.estimate.fdr import (
    Discoveries,
    InfluenceFDR,
    PairDiscoveries,
    StreamingBH,
    bh_qvalues,
    bh_reject,
)
from tailscope.estimate.influence import InfluenceResult, Pairs, TopK, influence
from tailscope.estimate.intervals import difference_interval
from tailscope.estimate.memorization import (
    MemorizationResult,
    memorization,
    memorization_counts,
    standard_error,
)
from tailscope.estimate.power import detection_power, models_needed
from tailscope.estimate.significance import fisher_pvalues

__all__ = [
    "Discoveries",
    "Estimates",
    "InfluenceFDR",
    "InfluenceResult",
    "MemorizationResult",
    "PairDiscoveries",
    "Pairs",
    "StreamingBH",
    "TopK",
    "UndefinedEstimateWarning",
    "bh_qvalues",
    "bh_reject",
    "covariate_adjusted",
    "detection_power",
    "difference_interval",
    "fisher_pvalues",
    "influence",
    "margin_based",
    "memorization",
    "memorization_counts",
    "models_needed",
    "shrunk",
    "standard_error",
]
