"""When to stop training: the memorization standard errors are small enough.

The SE of ``mem(i)`` shrinks like ``1/sqrt(K)``; :class:`StandardErrorTarget` stops once the
``quantile`` of the SEs over all train examples is at most ``se``.

The plug-in SE ``sqrt(p(1-p)/K)`` is 0 for an example every model got right, however few
models there are, so a rule on plug-in SEs would declare a handful of models converged.
The rule therefore uses add-one (Laplace) smoothed proportions,
``p~ = (hits + 1) / (K + 2)``, whose SE is never 0 and is close to the plug-in SE once K is
large; and it never stops before ``min_models`` models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailscope.errors import DataError
from tailscope.estimate import memorization_counts

__all__ = ["StandardErrorTarget", "smoothed_memorization_se"]


def smoothed_memorization_se(masks: np.ndarray, correct_train: np.ndarray) -> np.ndarray:
    """(n,) SE of mem with add-one smoothed proportions: never 0, +inf if never in/out."""
    hits_in, k_in, hits_out, k_out = memorization_counts(masks, correct_train)
    p_in = (hits_in + 1) / (k_in + 2)
    p_out = (hits_out + 1) / (k_out + 2)
    with np.errstate(divide="ignore"):
        var = p_in * (1 - p_in) / k_in + p_out * (1 - p_out) / k_out
    return np.sqrt(var)


@dataclass(frozen=True)
class StandardErrorTarget:
    """Stop once the ``quantile`` of the (smoothed) memorization SEs is ``<= se``.

    Attributes:
        se: target standard error, in (0, 1).
        quantile: which quantile of the n SEs must meet it (0.95: 95% of examples).
        min_models: never stop with fewer finished models than this.
    """

    se: float
    quantile: float = 0.95
    min_models: int = 32

    def __post_init__(self) -> None:
        if not 0 < self.se < 1:
            raise DataError(f"until_se must be in (0, 1), got {self.se}")
        if not 0 < self.quantile <= 1:
            raise DataError(f"quantile must be in (0, 1], got {self.quantile}")
        if self.min_models < 2:
            raise DataError(f"min_models must be at least 2, got {self.min_models}")

    def measure(self, masks: np.ndarray, correct_train: np.ndarray) -> float:
        """The ``quantile`` of the smoothed SEs of the models given (inf if too few)."""
        if len(masks) < self.min_models:
            return float("inf")
        se = smoothed_memorization_se(masks, correct_train)
        # The order statistic at or above the quantile: an SE some example really has, and
        # no interpolation between an inf (never in / never out) and a finite SE.
        return float(np.quantile(se, self.quantile, method="higher"))

    def reached(self, value: float) -> bool:
        return value <= self.se
