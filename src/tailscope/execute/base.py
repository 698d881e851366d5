"""What every executor is given and must do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tailscope.errors import DataError
from tailscope.models import Recipe

__all__ = ["ChunkCallback", "Executor", "TrainingJob", "get_executor"]

#: Called by an executor with (model indices, output rows) once a chunk is trained.
ChunkCallback = Callable[[np.ndarray, dict[str, np.ndarray]], None]


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """Everything needed to train any model of a run, addressed by model index.

    Attributes:
        recipe: architecture and training recipe.
        x_train, x_test: scaled float32 features, (n, *shape) and (t, *shape).
        y_train, y_test: int64 labels, (n,) and (t,).
        masks: (K, n) bool subset plan; seeds: (K,) int64 per-model seeds.
        device: torch device string the models train on.
        precision: ``"fp32"`` or ``"bf16"`` (see :func:`tailscope.engine.train_models`).
    """

    recipe: Recipe
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    masks: np.ndarray
    seeds: np.ndarray
    device: str = "cpu"
    precision: str = "fp32"


class Executor(Protocol):
    """Trains chunks of models and reports each finished chunk through ``on_chunk``.

    An executor may also have ``session(job)``, a context manager inside which its ``run``
    calls for ``job`` share their set-up (a cluster connection, the job in an object store);
    ``Run.train`` enters it, when there is one, around all its rounds. ``run`` must work
    outside a session too.
    """

    def run(
        self,
        job: TrainingJob,
        chunks: Iterable[np.ndarray],
        on_chunk: ChunkCallback,
        progress: Callable[[int], None] | None = None,
    ) -> None: ...


def get_executor(executor: str | Executor, **options: object) -> Executor:
    """Resolve an executor name (``"local"``, ``"ray"``) or pass an executor object through.

    ``options`` go to the executor's constructor (for ``"ray"``: ``address``,
    ``num_cpus_per_task``, ... of :class:`~tailscope.execute.ray.RayExecutor`).
    """
    if not isinstance(executor, str):
        return executor
    if executor == "local":
        from tailscope.execute.local import LocalExecutor

        return LocalExecutor(**options)
    if executor == "ray":
        from tailscope.execute.ray import RayExecutor  # imports Ray only now

        return RayExecutor(**options)
    raise DataError(f"executor must be 'local', 'ray' or an Executor object, got {executor!r}")
