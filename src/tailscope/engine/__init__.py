"""The training engine: train chunks of subset models and record their predictions."""

from tailscope.engine.outputs import ModelOutputs
from tailscope.engine.train import PRECISIONS, train_models

__all__ = ["PRECISIONS", "ModelOutputs", "train_models"]
