"""The sequential trainer: one model, one optimizer, one minibatch at a time.

Works for any ``nn.Module``. Model j gets the same initial weights and the same minibatches
as in the vectorized trainer (:mod:`tailscope.engine.schedule`), so both trainers agree up
to float round-off.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F

from tailscope.engine.data import DeviceData
from tailscope.engine.outputs import ModelOutputs, eval_rows, predict_both_splits
from tailscope.engine.precision import autocast
from tailscope.engine.schedule import init_model, member_orders
from tailscope.models.recipes import Recipe

__all__ = ["train_sequential"]


def train_sequential(
    recipe: Recipe,
    data: DeviceData,
    masks: np.ndarray,
    seeds: np.ndarray,
    *,
    precision: str = "fp32",
    progress: Callable[[int], None] | None = None,
) -> ModelOutputs:
    """Train the models of ``masks`` (k, n) / ``seeds`` (k,) one after another.

    ``precision="bf16"`` runs forward passes under ``torch.autocast`` to bfloat16.
    ``progress(1)`` is called after every step.
    """
    parts = [
        _train_one(recipe, data, masks[j : j + 1], seeds[j : j + 1], precision, progress)
        for j in range(len(seeds))
    ]
    return ModelOutputs.concatenate(parts)


def _train_one(
    recipe: Recipe,
    data: DeviceData,
    mask: np.ndarray,
    seed: np.ndarray,
    precision: str,
    progress: Callable[[int], None] | None,
) -> ModelOutputs:
    """Train one model: ``mask`` is (1, n), ``seed`` is (1,)."""
    model = init_model(recipe, data.feature_shape, data.n_classes, seed[0]).to(data.device)
    if data.device.type == "cpu":  # 4-D weights: convolutions output channels-last maps,
        model = model.to(memory_format=torch.channels_last)  # pooling them is ~10x faster
    optimizer = recipe.make_optimizer(model.parameters())
    m = int(mask[0].sum())
    batch = min(recipe.batch_size, m)
    x_buf = torch.empty((batch, *data.feature_shape), dtype=data.x_train.dtype, device=data.device)

    model.train()
    for order in islice(member_orders(mask, seed), recipe.epochs):
        order_t = torch.from_numpy(order[0]).to(data.device)
        for start in range(0, m, batch):
            idx = order_t[start : start + batch]
            xb = torch.index_select(data.x_train, 0, idx, out=x_buf[: len(idx)])
            optimizer.zero_grad()
            with autocast(data.device, precision):
                loss = F.cross_entropy(model(xb), data.y_train[idx])
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(1)

    model.eval()
    rows = eval_rows(model, data.x_train, 1)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with autocast(data.device, precision):
            return model(x).unsqueeze(0)

    return predict_both_splits(predict, data, mask, data.x_train, data.x_test, rows)
