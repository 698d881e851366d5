"""The vectorized trainer: k models take every optimizer step together.

The k modules are stacked into one set of parameters with a leading model axis
(:func:`torch.func.stack_module_state`) and run with ``vmap(functional_call)``. Each step
gathers every model's own minibatch, ``x[idx]`` with ``idx`` (k, B) → (k, B, *shape), and
minimises ``sum_j mean-cross-entropy_j``. The gradient of that sum with respect to model
j's parameters is model j's own gradient, and SGD and Adam update each parameter element
on its own, so one optimizer over the stacked leaves is exactly k independent trainings
(up to the float round-off of batched vs. single matrix products).

Modules that ``vmap`` cannot run (data-dependent Python control flow, ``.item()``, in-place
updates of unstacked state) are detected by a trial step on copies and reported with
:class:`NotVectorizableError`, on which the caller falls back to the sequential trainer.
BatchNorm vectorizes: its running statistics are stacked buffers, updated per model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from itertools import islice

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from tailscope.engine.data import DeviceData
from tailscope.engine.outputs import ModelOutputs, eval_rows, predict_both_splits
from tailscope.engine.precision import autocast
from tailscope.engine.schedule import init_model, member_orders
from tailscope.models.recipes import Recipe

__all__ = ["NotVectorizableError", "train_vectorized"]


class NotVectorizableError(Exception):
    """The recipe's module cannot run under ``vmap``; the message says why."""


def train_vectorized(
    recipe: Recipe,
    data: DeviceData,
    masks: np.ndarray,
    seeds: np.ndarray,
    *,
    precision: str = "fp32",
    progress: Callable[[int], None] | None = None,
) -> ModelOutputs:
    """Train ``k = len(seeds)`` models at once and record their predictions.

    ``masks`` is (k, n) bool with the same number ``m`` of members per row; model j trains
    on ``masks[j]`` from ``seeds[j]`` (see :mod:`tailscope.engine.schedule`).
    ``precision="bf16"`` runs forward passes under ``torch.autocast`` to bfloat16.
    ``progress(k)`` is called after every step.
    """
    k = len(seeds)
    models = [
        init_model(recipe, data.feature_shape, data.n_classes, seed).to(data.device)
        for seed in seeds
    ]
    rows = eval_rows(models[0], data.x_train, k)
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    del models
    _check_vmappable(base, params, buffers, data)

    def loss_of_one(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    losses = vmap(loss_of_one, randomness="different")
    optimizer = recipe.make_optimizer(params.values())
    m = int(masks[0].sum())
    batch = min(recipe.batch_size, m)
    shape = data.feature_shape
    x_buf = torch.empty((k * batch, *shape), dtype=data.x_train.dtype, device=data.device)
    y_buf = torch.empty(k * batch, dtype=torch.int64, device=data.device)

    base.train()
    for order in islice(member_orders(masks, seeds), recipe.epochs):
        order_t = torch.from_numpy(order).to(data.device)  # (k, m): one transfer per epoch
        for start in range(0, m, batch):
            idx = order_t[:, start : start + batch].reshape(-1)
            b = len(idx) // k
            xb = torch.index_select(data.x_train, 0, idx, out=x_buf[: len(idx)])
            yb = torch.index_select(data.y_train, 0, idx, out=y_buf[: len(idx)])
            optimizer.zero_grad()
            with autocast(data.device, precision):
                loss = losses(params, buffers, xb.view(k, b, *shape), yb.view(k, b)).sum()
            loss.backward()
            optimizer.step()
            if progress is not None:
                progress(k)

    base.eval()
    predict_all = vmap(
        lambda p, b, x: functional_call(base, (p, b), (x,)),
        in_dims=(0, 0, None),
        randomness="different",
    )

    def predict(x: Tensor) -> Tensor:
        with autocast(data.device, precision):
            return predict_all(params, buffers, x)

    return predict_both_splits(predict, data, masks, data.x_train, data.x_test, rows)


def _check_vmappable(base: nn.Module, params: dict, buffers: dict, data: DeviceData) -> None:
    """Run one vmapped training step and one evaluation on copies of two stacked models."""
    k = min(2, len(next(iter(params.values()))))
    p = {name: t[:k].detach().clone().requires_grad_() for name, t in params.items()}
    b = {name: t[:k].clone() for name, t in buffers.items()}
    x = data.x_train[:2]
    y = data.y_train[:2]

    def logits(p: dict, b: dict, x: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x,))

    try:
        base.train()
        out = vmap(logits, in_dims=(0, 0, None), randomness="different")(p, b, x)
        F.cross_entropy(out.flatten(0, 1), y.repeat(k)).backward()
        base.eval()
        with torch.no_grad():
            vmap(logits, in_dims=(0, 0, None), randomness="different")(p, b, x)
    except Exception as err:  # any failure under vmap means: train one at a time
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NotVectorizableError(reason) from err
