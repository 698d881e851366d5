"""The local executor: trains chunks in this process, as many per engine call as the
device takes in one vectorized step."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from tailscope.engine import train_models
from tailscope.engine.train import default_max_stacked
from tailscope.errors import DataError
from tailscope.execute.base import ChunkCallback, TrainingJob
from tailscope.store import OUTPUTS

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Train every chunk in-process, on ``job.device``, with the vectorized engine.

    Consecutive chunks are trained together, up to ``max_stacked`` models per vectorized
    step (default: the engine's, 16 on a CPU and 128 on an accelerator), so that a run
    with small chunks still fills a GPU; a larger chunk is split into such steps. Each chunk is
    reported through ``on_chunk`` as soon as its call ends. On a CPU this changes no bit of
    any model (a model does not depend on its companions there); elsewhere, only float
    round-off.
    """

    def __init__(self, max_stacked: int | None = None) -> None:
        if max_stacked is not None and (
            isinstance(max_stacked, bool) or not isinstance(max_stacked, int) or max_stacked < 1
        ):
            raise DataError(f"max_stacked must be an integer >= 1, got {max_stacked!r}")
        self.max_stacked = max_stacked

    def run(
        self,
        job: TrainingJob,
        chunks: Iterable[np.ndarray],
        on_chunk: ChunkCallback,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        limit = self.max_stacked or default_max_stacked(torch.device(job.device))
        for group in _groups(chunks, limit):
            models = np.concatenate(group)
            out = train_models(
                job.recipe,
                job.x_train,
                job.y_train,
                job.x_test,
                job.y_test,
                job.masks[models],
                job.seeds[models],
                device=job.device,
                precision=job.precision,
                max_stacked=limit,
            )
            start = 0
            for chunk in group:
                rows = slice(start, start + len(chunk))
                on_chunk(chunk, {name: getattr(out, name)[rows] for name in OUTPUTS})
                start += len(chunk)
                if progress is not None:
                    progress(len(chunk))


def _groups(chunks: Iterable[np.ndarray], limit: int) -> Iterator[list[np.ndarray]]:
    """Consecutive chunks, as many per group as fit in ``limit`` models (at least one)."""
    group: list[np.ndarray] = []
    size = 0
    for chunk in chunks:
        if group and size + len(chunk) > limit:
            yield group
            group, size = [], 0
        group.append(chunk)
        size += len(chunk)
    if group:
        yield group
