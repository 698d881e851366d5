"""Executors: where the models of a job are trained.

An executor receives a :class:`~tailscope.execute.base.TrainingJob` and the chunks of models
to train, trains each chunk, and hands every finished chunk's outputs back to the caller
(the run), which alone writes them. ``local`` trains in this process; ``ray`` on a cluster
(:mod:`tailscope.execute.ray`, imported only when asked for).
"""

from __future__ import annotations

from tailscope.errors import DataError
from tailscope.execute.base import ChunkCallback, Executor, TrainingJob
from tailscope.execute.local import LocalExecutor

__all__ = ["ChunkCallback", "Executor", "LocalExecutor", "TrainingJob", "get_executor"]

EXECUTORS = ("local", "ray")


def get_executor(executor: str | Executor = "local", **options: object) -> Executor:
    """Resolve an executor name (``"local"``, ``"ray"``) or pass an executor object through.

    ``options`` go to the executor's constructor (for ``"ray"``: ``address``,
    ``num_cpus_per_task``, ... of :class:`~tailscope.execute.ray.RayExecutor`).
    """
    if not isinstance(executor, str):
        if options:
            raise DataError(f"options {sorted(options)} apply to an executor name, not an object")
        return executor
    if executor == "local":
        if options:
            raise DataError(f"the local executor takes no options, got {sorted(options)}")
        return LocalExecutor()
    if executor == "ray":
        from tailscope.execute.ray import RayExecutor  # imports Ray only now

        return RayExecutor(**options)
    raise DataError(f"executor must be 'local', 'ray' or an Executor object, got {executor!r}")
