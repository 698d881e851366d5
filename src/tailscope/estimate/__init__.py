"""Estimators of memorization and influence from the masks and correctness of K models.

``memorization(masks, correct_train)`` gives the (n,) estimates and standard errors;
``influence(masks, correct_test, top_k=..., threshold=..., dense_path=...)`` computes the
(n, t) influence matrix in chunks and keeps only what was asked for. :class:`Estimates`
holds a run's estimates and exports them as tables.
"""

from tailscope.estimate._validation import UndefinedEstimateWarning
from tailscope.estimate.estimates import Estimates
from tailscope.estimate.influence import InfluenceResult, Pairs, TopK, influence
from tailscope.estimate.memorization import memorization, memorization_counts, standard_error

__all__ = [
    "Estimates",
    "InfluenceResult",
    "Pairs",
    "TopK",
    "UndefinedEstimateWarning",
    "influence",
    "memorization",
    "memorization_counts",
    "standard_error",
]
