"""The subset plan: which train examples each of the K models is trained on.

Model k trains on the index set ``I_k``, a uniformly random subset of exactly
``m = round(ratio * n)`` of the n train examples. The plan is the (K, n) boolean matrix
``masks[k, i] = (i in I_k)`` plus one training seed per model. It is drawn once from
``random_state`` and stored in the run (``masks.npy``), never regenerated, so estimates can
always be recomputed from the files a run ships.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tailscope.errors import DataError

__all__ = ["SubsetPlan", "check_ratio"]


def check_ratio(ratio: float) -> float:
    """Validate the subset ratio m/n, which must lie strictly between 0 and 1."""
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise DataError(f"ratio must be a number in (0, 1), got {ratio!r}") from None
    if not 0.0 < ratio < 1.0:
        raise DataError(f"ratio must be in (0, 1), got {ratio}")
    return ratio


@dataclass(frozen=True, eq=False)
class SubsetPlan:
    """K subset masks over n train examples and one training seed per model.

    Attributes:
        masks: (K, n) bool, every row with exactly ``m`` True entries.
        seeds: (K,) int64, the seed model k's initialisation and shuffling derive from.
        ratio: the requested m / n.
    """

    masks: np.ndarray
    seeds: np.ndarray
    ratio: float

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks)
        if masks.ndim != 2 or masks.dtype != np.bool_:
            raise DataError(f"masks must be a 2-D bool array, got {masks.dtype} {masks.shape}")
        sizes = masks.sum(axis=1)
        if len(sizes) and not np.all(sizes == sizes[0]):
            raise DataError("every subset mask must hold the same number of examples")
        if len(self.seeds) != len(masks):
            raise DataError(f"{len(masks)} masks but {len(self.seeds)} seeds")

    @classmethod
    def random(
        cls, n_models: int, n_train: int, ratio: float = 0.7, random_state: int | None = 0
    ) -> SubsetPlan:
        """Draw ``n_models`` uniformly random subsets of size ``round(ratio * n_train)``.

        Model k's mask and seed depend only on ``(random_state, k)``, so a plan for K models is
        the first K rows of a plan for any larger number of models with the same seed.
        """
        if isinstance(n_models, bool) or not isinstance(n_models, (int, np.integer)):
            raise DataError(f"n_models must be an integer, got {n_models!r}")
        if n_models < 2:
            raise DataError(f"n_models must be at least 2, got {n_models}")
        ratio = check_ratio(ratio)
        m = subset_size(n_train, ratio)
        root = np.random.SeedSequence(random_state)
        masks = np.zeros((n_models, n_train), dtype=bool)
        seeds = np.empty(n_models, dtype=np.int64)
        for k, child in enumerate(root.spawn(n_models)):
            rng = np.random.default_rng(child)
            masks[k, rng.choice(n_train, size=m, replace=False)] = True
            seeds[k] = rng.integers(0, 2**62)
        return cls(masks=masks, seeds=seeds, ratio=ratio)

    @property
    def n_models(self) -> int:
        return self.masks.shape[0]

    @property
    def n_train(self) -> int:
        return self.masks.shape[1]

    @property
    def subset_size(self) -> int:
        return int(self.masks[0].sum()) if self.n_models else 0


def subset_size(n_train: int, ratio: float) -> int:
    """m = round(ratio * n), kept in [1, n - 1] so every example can be both in and out."""
    if n_train < 2:
        raise DataError(f"need at least 2 train examples, got {n_train}")
    return int(min(max(round(ratio * n_train), 1), n_train - 1))
