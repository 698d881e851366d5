"""Estimators of memorization and influence from the masks and correctness of K models.

``memorization(masks, correct_train)`` gives the (n,) estimates and standard errors;
``influence(masks, correct_test, top_k=..., threshold=..., dense_path=...)`` computes the
(n, t) influence matrix in chunks and keeps only what was asked for. Findings with error
control: ``fisher_pvalues`` (one-sided exact p-values), ``bh_qvalues`` / ``bh_reject`` (dense
BH/BY), ``InfluenceFDR`` (BH/BY over all n x t pairs, streamed), ``difference_interval``
(confidence intervals) and ``models_needed`` / ``detection_power`` (exact power).
"""

from tailscope.estimate._validation import UndefinedEstimateWarning
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
from tailscope.estimate.memorization import memorization, memorization_counts, standard_error
from tailscope.estimate.power import detection_power, models_needed
from tailscope.estimate.significance import fisher_pvalues

__all__ = [
    "Discoveries",
    "InfluenceFDR",
    "InfluenceResult",
    "PairDiscoveries",
    "Pairs",
    "StreamingBH",
    "TopK",
    "UndefinedEstimateWarning",
    "bh_qvalues",
    "bh_reject",
    "detection_power",
    "difference_interval",
    "fisher_pvalues",
    "influence",
    "memorization",
    "memorization_counts",
    "models_needed",
    "standard_error",
]
