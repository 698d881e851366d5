"""What the engine records about every trained model, and the order-free sums it adds up.

For model ``k`` and example ``i`` with logits ``z`` and label ``y`` (one row per model):

- ``correct[k, i] = argmax_c z[c] == y`` (bool), the paper's 0/1 top-1 signal;
- ``margin[k, i] = z[y] - max_{c != y} z[c]`` (float16), positive exactly when the model
  is correct (up to ties and float16 rounding near 0);
- ``phi[k, i] = z[y] - logsumexp_{c != y} z[c]`` (float16), the logit of the softmax
  probability of the given label (``sigmoid(phi) = p_y``), LiRA's statistic;
- ``predicted[k, i] = argmax_c z[c]`` (int16).

And, summed over the chunk's models, the out-of-sample class probabilities that label-issue
methods need: for every train example the softmax vectors of the models that did *not*
train on it, for every test example those of all models. Each probability is rounded to a
multiple of ``2**-20`` and summed as an int64, so sums are exact, and the same whatever order
chunks arrive in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tailscope.engine.data import DeviceData

__all__ = [
    "PROB_UNIT",
    "ROW_DTYPES",
    "ModelOutputs",
    "eval_rows",
    "logit_margin",
    "predict_both_splits",
    "record_predictions",
    "softmax",
    "true_class_margin",
]

#: On a CPU, evaluation chunks hold about this many activation elements (summed over layers
#: and models): large enough for efficient GEMMs, small enough to stay clear of the
#: allocator's mmap threshold and in cache (measured best for the MNIST MLP, 32 models).
EVAL_ACTIVATIONS_PER_CHUNK = 2**24
#: An accelerator's chunks are this many times larger (fewer kernel launches).
ACCELERATOR_CHUNK_FACTOR = 16
#: Probabilities are summed in units of this (an int64 sum of K <= 2**40 models is exact).
PROB_UNIT = 2.0**-20
#: The per-model rows, by kind, and their dtypes (one array per kind and split).
ROW_DTYPES = {"correct": np.bool_, "margin": np.float16, "phi": np.float16, "predicted": np.int16}

#: float16's largest finite value; margins are clipped to it rather than overflowing to inf.
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass
class ModelOutputs:
    """Per-model rows for a chunk of ``k`` models on ``n`` train and ``t`` test examples,
    and the chunk's probability sums (C classes).

    Attributes:
        correct_train, correct_test: (k, n) / (k, t) bool.
        margin_train, margin_test: float16 max-margin ``z_y - max_{c != y} z_c``.
        phi_train, phi_test: float16 logit margin ``z_y - logsumexp_{c != y} z_c``.
        predicted_train, predicted_test: int16 predicted class.
        prob_sum_train: (n, C) int64, sum over the models with i not in their subset of
            ``round(softmax / PROB_UNIT)``; None for a selection of models.
        prob_sum_test: (t, C) int64, the same over all models; None for a selection.
    """

    correct_train: np.ndarray
    correct_test: np.ndarray
    margin_train: np.ndarray
    margin_test: np.ndarray
    phi_train: np.ndarray
    phi_test: np.ndarray
    predicted_train: np.ndarray
    predicted_test: np.ndarray
    prob_sum_train: np.ndarray | None
    prob_sum_test: np.ndarray | None

    #: Names of the per-model rows: ``correct_train``, ..., ``predicted_test``.
    ROWS = tuple(f"{kind}_{split}" for split in ("train", "test") for kind in ROW_DTYPES)

    @property
    def n_models(self) -> int:
        return len(self.correct_train)

    def rows(self) -> dict[str, np.ndarray]:
        """The per-model rows by name (see :attr:`ROWS`)."""
        return {name: getattr(self, name) for name in self.ROWS}

    def select(self, models: slice | np.ndarray) -> ModelOutputs:
        """The rows of some models (``models`` indexes the first axis); the chunk's sums
        cannot be split, so the selection has none."""
        rows = {name: value[models] for name, value in self.rows().items()}
        return ModelOutputs(**rows, prob_sum_train=None, prob_sum_test=None)

    @classmethod
    def from_splits(cls, train: dict[str, np.ndarray], test: dict[str, np.ndarray]):
        """From :func:`record_predictions`' results on the train and the test split."""
        fields = {
            f"{kind}_{split}": part[kind]
            for split, part in (("train", train), ("test", test))
            for kind in (*ROW_DTYPES, "prob_sum")
        }
        return cls(**fields)

    @classmethod
    def concatenate(cls, parts: Sequence[ModelOutputs]) -> ModelOutputs:
        """Stack the rows of several chunks, in order, and add their sums."""
        fields = {name: np.concatenate([getattr(p, name) for p in parts]) for name in cls.ROWS}
        for name in ("prob_sum_train", "prob_sum_test"):
            fields[name] = sum(getattr(p, name) for p in parts[1:]) + getattr(parts[0], name)
        return cls(**fields)


def softmax(logits: Tensor) -> Tensor:
    """float32 softmax over the last axis, in four vectorized ops: ``torch.softmax`` over a
    short last axis (10 classes) is 5x slower on CPUs (torch 2.13)."""
    p = logits.float() - logits.amax(dim=-1, keepdim=True)
    p.exp_()
    return p.div_(p.sum(dim=-1, keepdim=True))


def true_class_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z[y] - max_{c != y} z[c]`` for logits (..., B, C) and labels (B,) → (..., B)."""
    return _margins(logits, y)[0]


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``z[y] - logsumexp_{c != y} z[c]`` for logits (..., B, C) and labels (B,) → (..., B):
    the logit of the softmax probability of class y, computed without cancellation."""
    return _margins(logits, y)[1]


def _margins(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Both margins from one pass over the other classes' logits: ``(z_y - m, z_y - lse)``
    with ``m`` and ``lse`` the max and logsumexp of ``z_c``, ``c != y``."""
    index = y.expand(logits.shape[:-1]).unsqueeze(-1)
    true_logit = logits.gather(-1, index).squeeze(-1)
    others = logits.scatter(-1, index, float("-inf"))
    best_other = others.amax(dim=-1)
    others.sub_(best_other.unsqueeze(-1)).exp_()  # exp(-inf) = 0 for the true class
    log_sum = others.sum(dim=-1).log_()
    return true_logit - best_other, true_logit - best_other - log_sum


@torch.no_grad()
def record_predictions(
    predict: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    n_models: int,
    rows: int,
    n_classes: int,
    out_of_subset: Tensor | None = None,
) -> dict[str, np.ndarray]:
    """The rows (``correct``, ``margin``, ``phi``, ``predicted``: (k, n)) of ``k`` models on
    all of ``x`` (n, *shape), and ``prob_sum`` (n, C): the sum over models of their
    softmax vectors in units of :data:`PROB_UNIT`, over the models where ``out_of_subset``
    (k, n) bool is True, or over all of them.

    ``predict`` maps a chunk of examples (B, *shape) to the logits of all models
    (k, B, C); ``x`` is visited ``rows`` examples at a time. Results stay on ``x``'s
    device until the end, so there is one transfer to the host.
    """
    n = len(x)
    out = {
        kind: torch.empty(
            (n_models, n), dtype=getattr(torch, np.dtype(dtype).name), device=x.device
        )
        for kind, dtype in ROW_DTYPES.items()
    }
    prob_sum = torch.empty((n, n_classes), dtype=torch.int64, device=x.device)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        logits = predict(x[start:stop]).float()
        y_chunk = y[start:stop]
        predicted = logits.argmax(dim=-1)
        out["predicted"][:, start:stop] = predicted
        out["correct"][:, start:stop] = predicted == y_chunk
        margin, phi = _margins(logits, y_chunk)
        out["margin"][:, start:stop] = margin.clamp_(-_FLOAT16_MAX, _FLOAT16_MAX)
        out["phi"][:, start:stop] = phi.clamp_(-_FLOAT16_MAX, _FLOAT16_MAX)
        units = softmax(logits).div_(PROB_UNIT).round_().to(torch.int64)
        if out_of_subset is not None:
            units.mul_(out_of_subset[:, start:stop, None])
        torch.sum(units, dim=0, out=prob_sum[start:stop])
    result = {kind: value.cpu().numpy() for kind, value in out.items()}
    result["prob_sum"] = prob_sum.cpu().numpy()
    return result


def predict_both_splits(
    predict: Callable[[Tensor], Tensor],
    data: DeviceData,
    masks: np.ndarray,
    x_train: Tensor,
    x_test: Tensor,
    rows: int,
) -> ModelOutputs:
    """:func:`record_predictions` of the k models of ``masks`` (k, n) on both splits of
    ``data``, their inputs given as ``x_train`` and ``x_test`` (already in the trainer's
    layout and dtype); train sums over the models that held each example out."""
    k = len(masks)
    out_of_subset = torch.from_numpy(~np.asarray(masks)).to(x_train.device)
    train = record_predictions(
        predict, x_train, data.y_train, k, rows, data.n_classes, out_of_subset
    )
    test = record_predictions(predict, x_test, data.y_test, k, rows, data.n_classes)
    return ModelOutputs.from_splits(train, test)


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
