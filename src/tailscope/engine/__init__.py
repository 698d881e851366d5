"""The training engine: train chunks of subset models and record their predictions."""

from tailscope.engine.outputs import PROB_UNIT, ROW_DTYPES, ModelOutputs
from tailscope.engine.precision import PRECISIONS, resolve_precision
from tailscope.engine.train import default_models_per_step, train_models

__all__ = [
    "PRECISIONS",
    "PROB_UNIT",
    "ROW_DTYPES",
    "ModelOutputs",
    "default_models_per_step",
    "resolve_precision",
    "train_models",
]
