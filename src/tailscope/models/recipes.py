"""Training recipes: an architecture plus the hyper-parameters that train it.

A :class:`Recipe` is the learning algorithm ``A`` of Feldman & Zhang: given a subset of the
training set it yields a trained model. Built-in recipes are looked up by name with
:func:`get_recipe`; a user recipe is a ``Recipe`` with its own ``build`` factory.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from tailscope.errors import DataError
from tailscope.models.architectures import mlp, small_cnn

__all__ = ["OPTIMIZERS", "RECIPES", "Recipe", "get_recipe"]

OPTIMIZERS = ("sgd", "adam")

#: Builds a fresh module from (per-example feature shape, number of classes).
ModelFactory = Callable[[tuple[int, ...], int], nn.Module]


@dataclass(frozen=True)
class Recipe:
    """An architecture and how to train it.

    Attributes:
        name: identifies the recipe (and its architecture) in a run's spec.
        build: ``(feature_shape, n_classes) -> nn.Module``; the module maps a float32 batch
            ``(B, *feature_shape)`` to logits ``(B, n_classes)``.
        epochs: passes over the model's training subset.
        batch_size: examples per minibatch (the last, partial batch of an epoch is used).
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate.
        momentum: SGD momentum (``"sgd"`` only).
        weight_decay: L2 penalty added to the gradient by the optimizer.
        nesterov: Nesterov momentum (``"sgd"`` with ``momentum > 0`` only).
    """

    name: str
    build: ModelFactory = dataclasses.field(repr=False, compare=False)
    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise DataError(f"name must be a non-empty string, got {self.name!r}")
        if not callable(self.build):
            raise DataError(
                f"build must be a callable (feature_shape, n_classes) -> nn.Module, "
                f"got {type(self.build).__name__}"
            )
        for field in ("epochs", "batch_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(f"{field} must be an integer >= 1, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise DataError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not _is_real(self.lr) or not (math.isfinite(self.lr) and self.lr > 0):
            raise DataError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not _is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise DataError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not _is_real(self.weight_decay) or not (
            math.isfinite(self.weight_decay) and self.weight_decay >= 0
        ):
            raise DataError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not isinstance(self.nesterov, bool):
            raise DataError(f"nesterov must be True or False, got {self.nesterov!r}")
        if self.optimizer == "adam" and (self.momentum or self.nesterov):
            raise DataError(
                "momentum and nesterov apply to optimizer='sgd' only; "
                "set momentum=0 and nesterov=False for adam"
            )
        if self.nesterov and self.momentum == 0:
            raise DataError("nesterov=True needs momentum > 0")

    def to_spec(self) -> dict:
        """The recipe's JSON-able identity: its name and hyper-parameters (not ``build``)."""
        fields = dataclasses.fields(self)
        return {f.name: getattr(self, f.name) for f in fields if f.name != "build"}

    def make_optimizer(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """The recipe's optimizer over ``params``."""
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            nesterov=self.nesterov,
        )


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The built-in recipes by name.
RECIPES: types.MappingProxyType[str, Recipe] = types.MappingProxyType(
    {
        "mlp": Recipe(
            name="mlp",
            build=partial(mlp, hidden=(512, 256)),
            epochs=10,
            batch_size=128,
            lr=0.1,
            momentum=0.9,
        ),
        "cnn": Recipe(
            name="cnn",
            build=small_cnn,
            epochs=5,
            batch_size=128,
            lr=0.05,
            momentum=0.9,
        ),
    }
)


def get_recipe(name: str, **overrides: object) -> Recipe:
    """A built-in recipe, with hyper-parameters overridden: ``get_recipe("mlp", epochs=1)``.

    Switching a built-in SGD recipe to ``optimizer="adam"`` also drops its momentum unless
    ``momentum`` is given.
    """
    if name not in RECIPES:
        raise DataError(f"unknown recipe {name!r}; built-in recipes are {sorted(RECIPES)}")
    allowed = {f.name for f in dataclasses.fields(Recipe)} - {"name", "build"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise DataError(f"unknown recipe field {unknown[0]!r}; fields are {sorted(allowed)}")
    if overrides.get("optimizer") == "adam":
        overrides.setdefault("momentum", 0.0)
        overrides.setdefault("nesterov", False)
    return dataclasses.replace(RECIPES[name], **overrides)
