"""The local executor: trains chunks one after another in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from tailscope.engine import train_models
from tailscope.execute.base import ChunkCallback, TrainingJob

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Train every chunk in-process, on ``job.device``, with the vectorized engine."""

    def run(
        self,
        job: TrainingJob,
        chunks: Iterable[np.ndarray],
        on_chunk: ChunkCallback,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        for models in chunks:
            models = np.asarray(models, dtype=np.int64)
            outputs = train_models(
                job.recipe,
                job.x_train,
                job.y_train,
                job.x_test,
                job.y_test,
                job.masks[models],
                job.seeds[models],
                n_classes=job.n_classes,
                device=job.device,
                max_stacked=len(models),
                precision=job.precision,
            )
            on_chunk(models, outputs)
            if progress is not None:
                progress(len(models))
