"""What every executor is given and must do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tailscope.engine import ModelOutputs
from tailscope.models import Recipe

__all__ = ["ChunkCallback", "Executor", "TrainingJob"]

#: Called by an executor with (model indices, their outputs) once a chunk is trained.
ChunkCallback = Callable[[np.ndarray, ModelOutputs], None]


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """Everything needed to train any model of a job, addressed by its index.

    Attributes:
        recipe: architecture and training recipe.
        x_train, x_test: scaled float32 features, (n, *shape) and (t, *shape).
        y_train, y_test: int64 labels, (n,) and (t,).
        n_classes: number of classes.
        masks: (K, n) bool subsets; seeds: (K,) int64 per-model seeds.
        device: torch device string the models train on.
        precision: ``"fp32"`` or ``"bf16"`` (see :func:`tailscope.engine.train_models`).
    """

    recipe: Recipe
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    masks: np.ndarray
    seeds: np.ndarray
    device: str = "cpu"
    precision: str = "fp32"


class Executor(Protocol):
    """Trains chunks of a job's models and reports each finished chunk through ``on_chunk``.

    A chunk is a 1-D array of model indices trained together in one vectorized step (the
    caller makes them; every model of a chunk has a subset of the same size). An executor
    may also have ``session(job)``, a context manager inside which its ``run`` calls for
    ``job`` share their set-up (a cluster connection, the job in an object store); the run
    enters it, when there is one, around all its rounds. ``run`` must work outside a
    session too.
    """

    def run(
        self,
        job: TrainingJob,
        chunks: Iterable[np.ndarray],
        on_chunk: ChunkCallback,
        progress: Callable[[int], None] | None = None,
    ) -> None: ...
