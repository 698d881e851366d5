"""What a model's seed decides: its initial weights and the order it sees its subset in.

Model ``j`` of a chunk depends only on ``(recipe, data, masks[j], seeds[j])``:

- its weights are drawn by ``recipe.build`` right after ``torch.manual_seed(seeds[j])``
  (inside :func:`torch.random.fork_rng`, so the caller's global generator is left alone);
- each epoch it visits its ``m`` subset members in the order of
  ``np.random.default_rng(seeds[j]).permutation(m)`` (one new permutation per epoch),
  in minibatches of ``batch_size``, the last one partial.

Both trainers use these two functions, so a model comes out the same (up to float
round-off) whether it is trained alone, in any chunk, vectorized or sequentially. The one
exception is a module that draws random numbers while training (dropout): it draws them
from torch's global generator, so its models depend on that generator's state and, when
vectorized, on their chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from tailscope.models.recipes import Recipe

__all__ = ["init_model", "member_orders"]


def init_model(
    recipe: Recipe, feature_shape: tuple[int, ...], n_classes: int, seed: int
) -> nn.Module:
    """A fresh module of ``recipe`` with weights drawn under ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = recipe.build(tuple(feature_shape), int(n_classes))
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"recipe {recipe.name!r}: build must return a torch.nn.Module, "
            f"got {type(model).__name__}"
        )
    return model


def member_orders(masks: np.ndarray, seeds: np.ndarray) -> Iterator[np.ndarray]:
    """Endless per-epoch visiting orders: (k, m) int64 train indices, row j from model j.

    ``masks`` is (k, n) bool with ``m`` True entries in every row; ``seeds`` is (k,).
    """
    members = [np.flatnonzero(row) for row in masks]
    rngs = [np.random.default_rng(int(seed)) for seed in seeds]
    while True:
        yield np.stack(
            [idx[rng.permutation(len(idx))] for idx, rng in zip(members, rngs, strict=True)]
        )
