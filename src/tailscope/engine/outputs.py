"""What the engine records about every trained model: correctness and true-class margin.

For model ``k`` and example ``i`` with logits ``z`` and label ``y``:

- ``correct[k, i] = argmax_c z[c] == y`` (bool), the paper's 0/1 top-1 signal;
- ``margin[k, i] = z[y] - max_{c != y} z[c]`` (float16), positive exactly when the model
  is correct (up to ties and float16 rounding near 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ModelOutputs", "eval_rows", "record_predictions", "true_class_margin"]

#: On a CPU, evaluation chunks hold about this many activation elements (summed over layers
#: and models): large enough for efficient GEMMs, small enough to stay clear of the
#: allocator's mmap threshold and in cache (measured best for the MNIST MLP, 32 models).
EVAL_ACTIVATIONS_PER_CHUNK = 2**24
#: An accelerator's chunks are this many times larger (fewer kernel launches).
ACCELERATOR_CHUNK_FACTOR = 16

#: float16's largest finite value; margins are clipped to it rather than overflowing to inf.
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class ModelOutputs:
    """Per-model rows for a chunk of ``k`` models on ``n`` train and ``t`` test examples.

    Attributes:
        correct_train: (k, n) bool.
        correct_test: (k, t) bool.
        margin_train: (k, n) float16 true-class margin.
        margin_test: (k, t) float16.
    """

    correct_train: np.ndarray
    correct_test: np.ndarray
    margin_train: np.ndarray
    margin_test: np.ndarray

    @property
    def n_models(self) -> int:
        return len(self.correct_train)

    def select(self, models: slice | np.ndarray) -> ModelOutputs:
        """The rows of some models: ``models`` indexes the first axis."""
        return ModelOutputs(
            correct_train=self.correct_train[models],
            correct_test=self.correct_test[models],
            margin_train=self.margin_train[models],
            margin_test=self.margin_test[models],
        )

    @classmethod
    def concatenate(cls, parts: Sequence[ModelOutputs]) -> ModelOutputs:
        """Stack the rows of several chunks, in order."""
        return cls(
            correct_train=np.concatenate([p.correct_train for p in parts]),
            correct_test=np.concatenate([p.correct_test for p in parts]),
            margin_train=np.concatenate([p.margin_train for p in parts]),
            margin_test=np.concatenate([p.margin_test for p in parts]),
        )


def true_class_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z[y] - max_{c != y} z[c]`` for logits (..., B, C) and labels (B,) → (..., B)."""
    top2, top2_class = logits.topk(2, dim=-1)
    true_logit = logits.gather(-1, y.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    best_other = torch.where(top2_class[..., 0] == y, top2[..., 1], top2[..., 0])
    return true_logit - best_other


@torch.no_grad()
def record_predictions(
    predict: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, n_models: int, rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Correctness (k, n) bool and margin (k, n) float16 of ``k`` models on all of ``x``.

    ``predict`` maps a chunk of examples (B, *shape) to the logits of all models
    (k, B, C); ``x`` is visited ``rows`` examples at a time. Results stay on ``x``'s
    device until the end, so there is one transfer to the host.
    """
    n = len(x)
    correct = torch.empty((n_models, n), dtype=torch.bool, device=x.device)
    margin = torch.empty((n_models, n), dtype=torch.float16, device=x.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        logits = predict(x[start:stop]).float()
        y_chunk = y[start:stop]
        correct[:, start:stop] = logits.argmax(dim=-1) == y_chunk
        margin[:, start:stop] = true_class_margin(logits, y_chunk).clamp_(
            -_FLOAT16_MAX, _FLOAT16_MAX
        )
    return correct.cpu().numpy(), margin.cpu().numpy()


@torch.no_grad()
def eval_rows(model: nn.Module, x: Tensor, n_models: int) -> int:
    """Examples per evaluation chunk for ``n_models`` copies of ``model``.

    Counts the activation elements one example produces (outputs of the leaf modules, from
    a forward pass of ``x[:1]`` in eval mode) and fits ``EVAL_ACTIVATIONS_PER_CHUNK`` (times
    ``ACCELERATOR_CHUNK_FACTOR`` off the CPU), within [16, 8192] examples.
    """
    sizes: list[int] = []
    leaves = [mod for mod in model.modules() if not list(mod.children())]
    hooks = [
        mod.register_forward_hook(
            lambda _m, _i, out: sizes.append(out.numel() if isinstance(out, Tensor) else 0)
        )
        for mod in leaves
    ]
    was_training = model.training
    try:
        model.eval()
        model(x[:1])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    budget = EVAL_ACTIVATIONS_PER_CHUNK
    if x.device.type != "cpu":
        budget *= ACCELERATOR_CHUNK_FACTOR
    per_example = max(sum(sizes), 1)
    return int(np.clip(budget // (n_models * per_example), 16, 8192))
