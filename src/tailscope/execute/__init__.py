"""Executors: where the models of a run are trained.

An executor receives a :class:`~tailscope.execute.base.TrainingJob` and the chunks of models
still to train, trains each chunk, and hands every finished chunk's rows back to the driver,
which alone writes them to the run store.
"""

from tailscope.execute.base import Executor, TrainingJob, get_executor
from tailscope.execute.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "TrainingJob", "get_executor"]
