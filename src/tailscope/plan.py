"""The subset plan: which train examples each of the K models is trained on.

Model k trains on the index set ``I_k``, a uniformly random subset of exactly
``m_k = round(ratio_k * n)`` of the n train examples. The plan is the (K, n) boolean matrix
``masks[k, i] = (i in I_k)``, one training seed per model and each model's ratio. It is
drawn once from ``random_state`` and stored in the run (``masks.npy``), never regenerated, so
estimates can always be recomputed from the files a run ships.

A plan has one ratio (the paper's 0.7) or several (C-scores integrate held-out accuracy over
ratios): ``n_models`` per ratio, ratio by ratio in the given order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tailscope._checks import check_scalar
from tailscope.errors import DataError

__all__ = ["SubsetPlan", "check_ratios", "subset_size"]


def check_ratios(ratios: float | Sequence[float], name: str = "ratio") -> tuple[float, ...]:
    """One subset ratio m/n, or several distinct ones, each strictly between 0 and 1."""
    values = [ratios] if np.ndim(ratios) == 0 else list(ratios)
    if not values:
        raise DataError(f"{name} must hold at least one ratio")
    checked = tuple(
        check_scalar(r, name, float, min_val=0.0, max_val=1.0, inclusive=False) for r in values
    )
    if len(set(checked)) != len(checked):
        raise DataError(f"{name} must not repeat a ratio, got {list(checked)}")
    return checked


def subset_size(n_train: int, ratio: float) -> int:
    """m = round(ratio * n), kept in [1, n - 1] so every example can be both in and out."""
    if n_train < 2:
        raise DataError(f"need at least 2 train examples, got {n_train}")
    return int(min(max(round(ratio * n_train), 1), n_train - 1))


@dataclass(frozen=True, eq=False)
class SubsetPlan:
    """K subset masks over n train examples, one training seed and one ratio per model.

    Attributes:
        masks: (K, n) bool; the models of one ratio all have ``subset_size(n, ratio)``
            members.
        seeds: (K,) int64, the seed model k's initialisation and shuffling derive from.
        ratios: (K,) float64, the requested m / n of every model.
    """

    masks: np.ndarray
    seeds: np.ndarray
    ratios: np.ndarray

    def __post_init__(self) -> None:
        masks = np.asarray(self.masks)
        if masks.ndim != 2 or masks.dtype != np.bool_:
            raise DataError(f"masks must be a 2-D bool array, got {masks.dtype} {masks.shape}")
        if len(self.seeds) != len(masks) or len(self.ratios) != len(masks):
            raise DataError(
                f"{len(masks)} masks but {len(self.seeds)} seeds and {len(self.ratios)} ratios"
            )
        sizes = masks.sum(axis=1)
        for ratio in np.unique(self.ratios):
            if len(np.unique(sizes[self.ratios == ratio])) > 1:
                raise DataError(
                    f"every subset mask of ratio {ratio:g} must hold the same number of examples"
                )

    @classmethod
    def random(
        cls,
        n_models: int,
        n_train: int,
        ratio: float | Sequence[float] = 0.7,
        random_state: int | None = 0,
    ) -> SubsetPlan:
        """Draw ``n_models`` uniformly random subsets per ratio, of size
        ``round(ratio * n_train)``, ratio by ratio.

        Model k's mask and seed depend only on ``(random_state, k)`` and its ratio, so a
        one-ratio plan for K models is the first K rows of a plan for any larger K with the
        same seed.
        """
        n_models = check_scalar(n_models, "n_models", int, min_val=2)
        ratios = np.repeat(check_ratios(ratio), n_models)
        masks = np.zeros((len(ratios), n_train), dtype=bool)
        seeds = np.empty(len(ratios), dtype=np.int64)
        children = np.random.SeedSequence(random_state).spawn(len(ratios))
        for k, (child, r) in enumerate(zip(children, ratios, strict=True)):
            rng = np.random.default_rng(child)
            masks[k, rng.choice(n_train, size=subset_size(n_train, r), replace=False)] = True
            seeds[k] = rng.integers(0, 2**62)
        return cls(masks=masks, seeds=seeds, ratios=ratios)

    @property
    def n_models(self) -> int:
        return self.masks.shape[0]

    @property
    def n_train(self) -> int:
        return self.masks.shape[1]

    def groups(self) -> list[tuple[float, np.ndarray]]:
        """``(ratio, model indices)`` of every ratio, in plan order."""
        ratios = np.asarray(self.ratios)
        first = sorted(np.unique(ratios, return_index=True)[1])
        return [(float(ratios[i]), np.flatnonzero(ratios == ratios[i])) for i in first]

    def chunks(self, models_per_step: int, todo: np.ndarray | None = None) -> list[np.ndarray]:
        """The fixed chunks of the plan: consecutive models of one ratio, ``models_per_step``
        at most, in plan order; with ``todo`` (K,) bool, only the chunks holding a model
        still to do (retrained whole, so a model is always trained beside the same
        companions and a resumed run repeats an uninterrupted one exactly)."""
        step = check_scalar(models_per_step, "models_per_step", int, min_val=1)
        out = []
        for _, models in self.groups():
            for start in range(0, len(models), step):
                chunk = models[start : start + step]
                if todo is None or np.asarray(todo)[chunk].any():
                    out.append(chunk)
        return out
