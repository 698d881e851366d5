"""``train_models``: train a chunk of subset models and record their predictions.

This is the engine's one entry point. It validates the inputs, moves the data to the
device once, and hands groups of at most ``max_stacked`` models to a trainer:

1. the stacked-MLP trainer (:mod:`~tailscope.engine.stacked_mlp`: batched matrix products,
   hand-written backward, fused update) when the recipe's module is a plain ReLU MLP
   trained with SGD, as the built-in ``mlp`` recipe;
2. else the vectorized one (:mod:`~tailscope.engine.vectorized`) when the module runs under
   ``vmap``, except convolutional modules on a CPU;
3. else the sequential one, one model at a time (on a CPU with channels-last weights, which
   makes convolutions and pooling several times faster there).

All three train the same models for the same seeds, up to float round-off.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tailscope._checks import check_device
from tailscope.engine.data import to_device_data
from tailscope.engine.outputs import ModelOutputs
from tailscope.engine.precision import check_precision
from tailscope.engine.schedule import init_model
from tailscope.engine.sequential import train_sequential
from tailscope.engine.stacked_mlp import train_stacked_mlp, uses_stacked_mlp
from tailscope.engine.vectorized import NotVectorizableError, train_vectorized
from tailscope.errors import DataError
from tailscope.models.recipes import Recipe

__all__ = ["default_models_per_step", "train_models"]

#: Models per vectorized step by default. On a CPU, 8-32 run at about the same rate (GEMM-
#: bound); 16 keeps the MNIST MLP's per-step gradients (16 x 784 x 512 floats) under glibc's
#: 32 MB mmap threshold, which measured 10-20% faster than 32.
#: An accelerator keeps gaining from wider steps.
MAX_STACKED_CPU = 16
MAX_STACKED_ACCELERATOR = 128


def train_models(
    recipe: Recipe,
    x_train: object,
    y_train: object,
    x_test: object,
    y_test: object,
    masks: object,
    seeds: object,
    *,
    n_classes: int | None = None,
    device: torch.device | str = "cpu",
    vectorize: bool | None = None,
    stacked_mlp: bool = True,
    max_stacked: int | None = None,
    precision: str = "fp32",
    progress: Callable[[int], object] | object | None = None,
) -> ModelOutputs:
    """Train one model per subset mask and record every model's predictions.

    Model j trains on the rows ``masks[j]`` of the train split from seed ``seeds[j]`` and
    depends on nothing else: the chunk a model is trained in, and whether it is trained
    vectorized or alone, change its weights only by float round-off (on the stacked-MLP
    path on a CPU, not at all: its rows are the same bit for bit in any chunk).

    Args:
        recipe: architecture and hyper-parameters.
        x_train, x_test: float features (n, *shape) and (t, *shape), numpy or torch.
        y_train, y_test: integer labels (n,) and (t,).
        masks: (k, n) bool, every row with the same number m >= 1 of True entries.
        seeds: (k,) non-negative integers, one per model.
        n_classes: number of classes; default ``max(label) + 1`` over both splits.
        device: torch device to train on (``"cpu"``, ``"cuda"``, ...).
        vectorize: True: train up to ``max_stacked`` models per step with
            ``torch.func.vmap`` (modules that cannot be vmapped fall back to one at a time,
            with a warning); False: one at a time. None (default): vectorized, except
            convolutional modules on a CPU, which train one at a time with channels-last
            convolutions and pooling (~3x faster than vmap's grouped convolutions for the
            ``cnn`` recipe, see ``benchmarks/RESULTS.md``).
        stacked_mlp: unless ``vectorize`` is False, train plain ReLU MLPs with SGD (the ``mlp``
            recipe) on the stacked-MLP fast path; False forces the generic ``vmap`` path.
        max_stacked: models per vectorized step (default 16 on CPU, 128 elsewhere).
        precision: ``"fp32"``, or ``"bf16"`` for bfloat16 matrix products with float32
            master weights and optimizer state: by hand on the stacked-MLP path, with
            ``torch.autocast`` on the others (see :mod:`tailscope.engine.precision`;
            warns once where a CPU would emulate bf16, slower than fp32).
        progress: called with the number of model-steps taken after every step (a
            vectorized step of k models counts k), or a tqdm-like object with ``update``;
            a whole call takes ``k * recipe.epochs * ceil(m / recipe.batch_size)``.

    Returns:
        :class:`ModelOutputs`: (k, n) and (k, t) rows of correctness, max-margin, logit
        margin and predicted class in the order of ``masks``, and the models' summed
        out-of-sample class probabilities.
    """
    if not isinstance(recipe, Recipe):
        raise DataError(f"recipe must be a tailscope Recipe, got {type(recipe).__name__}")
    device = check_device(device)
    precision = check_precision(precision, device)
    data = to_device_data(x_train, y_train, x_test, y_test, n_classes, device)
    masks, seeds = _check_plan(masks, seeds, len(data.x_train))
    step_done = _progress_callback(progress)
    if max_stacked is None:
        max_stacked = default_models_per_step(data.device)
    elif not isinstance(max_stacked, int) or isinstance(max_stacked, bool) or max_stacked < 1:
        raise DataError(f"max_stacked must be an integer >= 1, got {max_stacked!r}")

    module = init_model(recipe, data.feature_shape, data.n_classes, seed=0)  # to inspect
    fast = (
        vectorize is not False
        and stacked_mlp
        and uses_stacked_mlp(recipe, module, data.feature_shape)
    )
    if vectorize is None:
        vectorize = not (data.device.type == "cpu" and _is_convolutional(module))
    del module
    parts = []
    for start in range(0, len(seeds), max_stacked):
        group = slice(start, start + max_stacked)
        args = (recipe, data, masks[group], seeds[group])
        if fast:
            parts.append(train_stacked_mlp(*args, precision=precision, progress=step_done))
            continue
        if vectorize:
            try:
                parts.append(train_vectorized(*args, precision=precision, progress=step_done))
                continue
            except NotVectorizableError as err:
                warnings.warn(
                    f"recipe {recipe.name!r} cannot be vectorized ({err}); "
                    "training its models one at a time",
                    stacklevel=2,
                )
                vectorize = False
        parts.append(train_sequential(*args, precision=precision, progress=step_done))
    return ModelOutputs.concatenate(parts)


def default_models_per_step(device: torch.device | str) -> int:
    """Models per vectorized step by default on ``device``: 16 on a CPU, 128 elsewhere."""
    return MAX_STACKED_CPU if torch.device(device).type == "cpu" else MAX_STACKED_ACCELERATOR


def _is_convolutional(module: nn.Module) -> bool:
    """Whether ``module`` has convolutions: on a CPU these train faster one at a time."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def _check_plan(masks: object, seeds: object, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    seeds = np.asarray(seeds)
    if masks.dtype != np.bool_:
        raise DataError(f"masks must be a boolean array, got dtype {masks.dtype}")
    if masks.ndim != 2 or masks.shape[1] != n_train or len(masks) == 0:
        raise DataError(
            f"masks must have shape (n_models >= 1, n_train={n_train}), got {masks.shape}"
        )
    sizes = masks.sum(axis=1)
    if sizes.min() != sizes.max():
        raise DataError(
            "every row of masks must select the same number of examples (the subset size "
            f"m), got sizes from {sizes.min()} to {sizes.max()}"
        )
    if sizes[0] == 0:
        raise DataError("masks select no training examples (m = 0)")
    if seeds.shape != (len(masks),) or not np.issubdtype(seeds.dtype, np.integer):
        raise DataError(
            f"seeds must be {len(masks)} integers, one per mask row, got {seeds.dtype} "
            f"{seeds.shape}"
        )
    if (seeds < 0).any():
        raise DataError(f"seeds must be non-negative, got {seeds.min()}")
    return masks, seeds


def _progress_callback(progress: object) -> Callable[[int], object] | None:
    if progress is None or callable(getattr(progress, "update", None)):
        return None if progress is None else progress.update
    if callable(progress):
        return progress
    raise DataError(f"progress must be a callable or have an update method, got {progress!r}")
