"""The stacked-MLP trainer: k ReLU MLPs trained together with batched matrix products.

A fast path for modules of the shape ``[Flatten] → (Linear → ReLU)* → Linear`` trained with
SGD (the built-in ``mlp`` recipe and any recipe whose module has exactly that shape). It
trains the same models as the generic trainers (same initial weights from
:func:`~tailscope.engine.schedule.init_model`, same minibatches from
:func:`~tailscope.engine.schedule.member_orders`, the same SGD update), up to float
round-off, with no autograd and no large allocation per step: every buffer is allocated
once per chunk (so glibc's habit of returning freed blocks over 32 MB to the OS, and
page-faulting them back on the next step, never bites; no allocator tuning needed).

Model j, layer l, in "x @ W + b" form: ``W_l[j] = Linear.weight.T`` (d_l, d_{l+1}) and
``b_l[j]`` (d_{l+1}). On a minibatch ``x`` (k, B, d_0) with labels ``y`` (k, B)::

    forward   a_0 = x;  z_l = a_l W_l + b_l  (baddbmm);  a_{l+1} = relu(z_l);  logits = z_L
    loss      sum_j mean_b cross_entropy(logits[j, b], y[j, b])
    backward  dz_L = (softmax(z_L) - onehot(y)) / B
              dW_l = a_l^T dz_l  (bmm);  db_l = sum_b dz_l
              dz_{l-1} = (dz_l W_l^T) * [a_l > 0]
    update    heavy-ball SGD (momentum mu, no Nesterov): the gradient products accumulate
              straight into the momentum buffer, v_l = mu v_l + a_l^T dz_l (baddbmm_),
              then v += wd p (with weight decay) and p -= lr v over one flat tensor
              holding every parameter; otherwise torch.optim.SGD(fused=True) over it

With ``precision="bf16"`` the matrix products round their inputs to bfloat16 and
accumulate in float32; the master weights, their gradients and the momentum stay float32
(see :mod:`tailscope.engine.precision`). On a CPU every training tensor stays float32 and
the products run in oneDNN's bf16 mode
(:func:`~tailscope.engine.precision.fp32_products_in_bf16`), which rounds inside the
kernels: no bf16 copy of the weights after each update, no casts of activations or
gradients, and the weight gradients accumulate straight into the momentum as in fp32
(``bench_training.py --profile``: 10.7 ms a step, against 15.5 ms with bf16 tensors). On
other devices the products take bfloat16 copies of the weights and activations. Predictions
take bf16 copies everywhere. Evaluation runs without autograd,
as batched products of each chunk of examples (shared by the k models as a broadcast view)
with every model's weights, which ran 10-20% faster than one wide GEMM
``[rows, d_0] @ [d_0, k * d_1]``.

A model's rows depend on its chunk only through float round-off: batched products may
split their work differently for other batch sizes, thread counts or instruction sets. The
chunks of a run are fixed, so a resumed run repeats exactly the same computation.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from itertools import islice, pairwise

import numpy as np
import torch
from torch import Tensor, nn
from torch.profiler import record_function

from tailscope.engine.data import DeviceData
from tailscope.engine.outputs import ModelOutputs, predict_both_splits, softmax
from tailscope.engine.precision import compute_dtype, fp32_products_in_bf16
from tailscope.engine.schedule import init_model, member_orders
from tailscope.models.recipes import Recipe

__all__ = ["HeavyBallSGD", "StackedMLP", "mlp_widths", "train_stacked_mlp", "uses_stacked_mlp"]

#: Examples per evaluation chunk. Fixed (not scaled by the number of models) so that a
#: model's evaluation does not depend on its chunk; for the MNIST MLP (16 models) 1024 ran
#: 5% faster than 512 and 20% faster than 2048, whose activations outgrow the caches.
EVAL_ROWS_CPU = 1024
#: On an accelerator, as many rows as keep the widest activation (k, rows, d) near this
#: many bytes (rows in [1024, 16384]); 128 MNIST MLPs: 2048 rows, 0.5 GB.
EVAL_BYTES_ACCELERATOR = 2**29
#: The flat parameter tensor's length is a multiple of this (a cache line of float32 is 16).
_FLAT_ALIGNMENT = 64


def mlp_widths(module: nn.Module, feature_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Widths ``(d_0, ..., d_L)`` of a plain ReLU MLP, or None for any other module.

    A plain MLP is an ``nn.Sequential`` of exactly ``[nn.Flatten()] + (nn.Linear, nn.ReLU)
    * (L - 1) + [nn.Linear]`` (classes matched exactly, not subclasses), every Linear with
    a float32 bias, no hooks; the Flatten may be left out for 1-D features.
    """
    if type(module) is not nn.Sequential:
        return None
    layers = list(module)
    if layers and type(layers[0]) is nn.Flatten:
        flatten = layers.pop(0)
        if (flatten.start_dim, flatten.end_dim) != (1, -1):
            return None
    elif len(feature_shape) != 1:
        return None
    if len(layers) % 2 == 0:
        return None
    expected = [nn.Linear if i % 2 == 0 else nn.ReLU for i in range(len(layers))]
    if [type(layer) for layer in layers] != expected:
        return None
    if any(_has_hooks(m) for m in module.modules()):
        return None
    linears = layers[::2]
    widths = [math.prod(feature_shape)]
    for linear in linears:
        if linear.bias is None or linear.weight.dtype != torch.float32:
            return None
        if linear.in_features != widths[-1]:
            return None
        widths.append(linear.out_features)
    return tuple(widths)


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
    )


def uses_stacked_mlp(recipe: Recipe, module: nn.Module, feature_shape: tuple[int, ...]) -> bool:
    """True when ``recipe`` (with ``module``, one model it builds) can take the fast path."""
    return recipe.optimizer == "sgd" and mlp_widths(module, feature_shape) is not None


class StackedMLP:
    """The parameters, gradients and buffers of k MLPs of widths ``(d_0, ..., d_L)``.

    Built from k modules of that shape (their weights are copied), for minibatches of up
    to ``batch`` examples per model and matrix products in ``dtype``. Every parameter lives
    in one flat float32 tensor ``flat`` (layer by layer: all k weights (k, d_l, d_{l+1}),
    then all k biases (k, d_{l+1})), every gradient in ``flat.grad``, so one fused SGD step
    updates all of them.
    """

    def __init__(
        self,
        modules: Sequence[nn.Module],
        widths: tuple[int, ...],
        batch: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.k = k = len(modules)
        self.widths = widths
        self.dtype = dtype
        self.device = device
        shapes = []
        for d_in, d_out in pairwise(widths):
            shapes += [(k, d_in, d_out), (k, d_out)]
        numel = sum(math.prod(s) for s in shapes)
        numel = -(-numel // _FLAT_ALIGNMENT) * _FLAT_ALIGNMENT
        self.flat = torch.zeros(numel, dtype=torch.float32, device=device)
        self.flat.grad = torch.zeros_like(self.flat)
        params = _views(self.flat, shapes)
        grads = _views(self.flat.grad, shapes)
        self.weights, self.biases = params[::2], params[1::2]
        self.grad_weights, self.grad_biases = grads[::2], grads[1::2]
        with torch.no_grad():
            for j, module in enumerate(modules):
                linears = [m for m in module.modules() if type(m) is nn.Linear]
                for layer, linear in enumerate(linears):
                    self.weights[layer][j].copy_(linear.weight.T)
                    self.biases[layer][j].copy_(linear.bias)
        # Matrix-product copies of the parameters: the float32 tensors themselves, or
        # bfloat16 copies refreshed after every update.
        if dtype == torch.float32:
            self.flat_lp = self.flat
        else:
            self.flat_lp = torch.empty(numel, dtype=dtype, device=device)
            self.flat_lp.copy_(self.flat)
        self._shapes = shapes
        self._view_lp()
        self._grad_decay = 0.0  # set by make_optimizer
        self._allocate(batch)

    @property
    def n_layers(self) -> int:
        return len(self.widths) - 1

    def make_optimizer(self, recipe: Recipe) -> HeavyBallSGD | torch.optim.SGD:
        """The recipe's SGD over the flat parameter tensor, as one fused update.

        With momentum and no Nesterov, :class:`HeavyBallSGD`: from then on
        :meth:`forward_backward` accumulates the gradient into ``flat.grad`` as the
        momentum buffer (``v = mu v + g``) inside the gradient products, which saves two
        of the five passes over the parameters that ``torch.optim.SGD`` makes per step.
        """
        if recipe.momentum > 0 and not recipe.nesterov:
            self._grad_decay = recipe.momentum
            return HeavyBallSGD(self.flat, lr=recipe.lr, weight_decay=recipe.weight_decay)
        self._grad_decay = 0.0
        return torch.optim.SGD(
            [self.flat],
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
            fused=True,
        )

    # ---- training ------------------------------------------------------------------------
    def _allocate(self, batch: int) -> None:
        """Buffers for minibatches of up to ``batch`` examples per model."""
        k, widths, dtype, device = self.k, self.widths, self.dtype, self.device

        def buffer(width: int) -> Tensor:
            return torch.empty(k * batch * width, dtype=dtype, device=device)

        self._x = buffer(widths[0])  # a_0: the gathered minibatch
        self._outputs = [buffer(d) for d in widths[1:]]  # a_1 .. a_{L-1}, then z_L
        self._grad_hidden = [buffer(d) for d in widths[1:-1]]  # dz_1 .. dz_{L-1}
        self._labels = torch.empty(k * batch, dtype=torch.int64, device=device)
        self._minus_one = torch.full((k, batch, 1), -1.0, device=device)
        low_precision = dtype != torch.float32
        self._grad_logits_lp = buffer(widths[-1]) if low_precision else None
        # Low-precision weight gradients: a bf16 product, added to the float32 gradient.
        self._grad_weight_lp = None
        if low_precision:
            largest = max(a * b for a, b in pairwise(widths))
            self._grad_weight_lp = torch.empty(k * largest, dtype=dtype, device=device)

    def gather(self, x_train: Tensor, y_train: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Every model's minibatch: rows ``index`` (k * b,) of ``x_train`` (n, d_0) and
        ``y_train`` (n,), as (k, b, d_0) and (k, b)."""
        k, b = self.k, len(index) // self.k
        x = torch.index_select(x_train, 0, index, out=_take(self._x, (k * b, self.widths[0])))
        y = torch.index_select(y_train, 0, index, out=self._labels[: k * b])
        return x.view(k, b, -1), y.view(k, b)

    def forward_backward(self, x: Tensor, y: Tensor) -> None:
        """Forward pass and hand-written backward of every model's mean cross-entropy on
        its own minibatch ``x`` (k, b, d_0), ``y`` (k, b); fills ``flat.grad``."""
        k, b = y.shape
        inputs = [x]  # a_0 .. a_{L-1}
        for layer in range(self.n_layers):
            out = _take(self._outputs[layer], (k, b, self.widths[layer + 1]))
            bias = self.biases_lp[layer].unsqueeze(1)
            torch.baddbmm(bias, inputs[layer], self.weights_lp[layer], out=out)
            if layer < self.n_layers - 1:
                inputs.append(out.relu_())

        grad = softmax(out)  # dz_L, in float32
        grad.scatter_add_(2, y.unsqueeze(2), self._minus_one[:, :b])
        grad.div_(b)
        self._bias_gradient(self.n_layers - 1, grad)
        if self._grad_logits_lp is not None:
            grad = _take(self._grad_logits_lp, grad.shape).copy_(grad)

        for layer in reversed(range(self.n_layers)):
            a_in = inputs[layer]
            self._weight_gradient(layer, a_in, grad)
            if layer < self.n_layers - 1:
                self._bias_gradient(layer, grad)
            if layer > 0:
                grad_in = _take(self._grad_hidden[layer - 1], a_in.shape)
                torch.bmm(grad, self.weights_lp[layer].transpose(1, 2), out=grad_in)
                grad = _relu_backward_(grad_in, a_in)

    def _weight_gradient(self, layer: int, a_in: Tensor, grad_out: Tensor) -> None:
        """``G_l = decay G_l + a_l^T dz_l`` into the float32 gradient (decay 0: overwrite)."""
        target, decay = self.grad_weights[layer], self._grad_decay
        if self._grad_weight_lp is None:
            if decay:
                target.baddbmm_(a_in.transpose(1, 2), grad_out, beta=decay)
            else:
                torch.bmm(a_in.transpose(1, 2), grad_out, out=target)
            return
        product = _take(self._grad_weight_lp, target.shape)
        torch.bmm(a_in.transpose(1, 2), grad_out, out=product)
        if decay:
            target.mul_(decay).add_(product)
        else:
            target.copy_(product)

    def _bias_gradient(self, layer: int, grad_out: Tensor) -> None:
        """``g_l = decay g_l + sum_b dz_l`` into the float32 gradient (decay 0: overwrite)."""
        target, decay = self.grad_biases[layer], self._grad_decay
        if decay:
            target.mul_(decay).add_(grad_out.sum(dim=1, dtype=torch.float32))
        else:
            torch.sum(grad_out, dim=1, dtype=torch.float32, out=target)

    def refresh_lp(self) -> None:
        """Copy the updated float32 parameters into the matrix-product copies."""
        if self.flat_lp is not self.flat:
            self.flat_lp.copy_(self.flat)

    # ---- evaluation ----------------------------------------------------------------------
    def _view_lp(self) -> None:
        lp = _views(self.flat_lp, self._shapes)
        self.weights_lp, self.biases_lp = lp[::2], lp[1::2]

    def prepare_eval(self, rows: int, dtype: torch.dtype | None = None) -> None:
        """Buffers for evaluating chunks of up to ``rows`` examples with products in
        ``dtype`` (default: the training dtype; another one gets its own weight copies)."""
        dtype = dtype or self.dtype
        if dtype != self.flat_lp.dtype:
            self.flat_lp = self.flat.to(dtype)
            self._view_lp()
        self._eval_outputs = [
            torch.empty(self.k * rows * d, dtype=dtype, device=self.device) for d in self.widths[1:]
        ]

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Logits (k, r, C) of every model on ``x`` (r, d_0), in the compute dtype, for r up
        to the ``rows`` of :meth:`prepare_eval`; overwritten by the next call.

        The chunk is shared by all k models as a broadcast view (k, r, d_0), no copy."""
        k, r = self.k, len(x)
        h = x.expand(k, r, self.widths[0])
        for layer in range(self.n_layers):
            out = _take(self._eval_outputs[layer], (k, r, self.widths[layer + 1]))
            h = torch.baddbmm(
                self.biases_lp[layer].unsqueeze(1), h, self.weights_lp[layer], out=out
            )
            if layer < self.n_layers - 1:
                h.relu_()
        return h


class HeavyBallSGD:
    """SGD with momentum (no Nesterov) whose momentum buffer is ``param.grad`` itself.

    The owner keeps ``param.grad = mu * param.grad + gradient`` (the momentum buffer of
    ``torch.optim.SGD``, whose first step also starts from zero); a step adds the weight
    decay, ``v += wd * param`` (so ``v = mu v + g + wd p``, as ``torch.optim.SGD``), then
    ``param -= lr * v``: the same iterates as ``torch.optim.SGD(momentum=mu)`` up to float
    round-off, in one pass over the parameters when there is no weight decay.
    """

    def __init__(self, param: Tensor, *, lr: float, weight_decay: float = 0.0) -> None:
        self.param, self.lr, self.weight_decay = param, lr, weight_decay

    @torch.no_grad()
    def step(self) -> None:
        buffer = self.param.grad
        if self.weight_decay:
            buffer.add_(self.param, alpha=self.weight_decay)
        self.param.add_(buffer, alpha=-self.lr)


def _eval_rows(device: torch.device, k: int, widths: tuple[int, ...], dtype: torch.dtype) -> int:
    """Examples per evaluation chunk: fixed on a CPU (so a model's rows do not depend on
    its chunk), sized to a memory budget elsewhere."""
    if device.type == "cpu":
        return EVAL_ROWS_CPU
    per_row = k * max(widths[1:]) * torch.finfo(dtype).bits // 8
    return int(np.clip(EVAL_BYTES_ACCELERATOR // per_row, 1024, 16384))


def _relu_backward_(grad: Tensor, activation: Tensor) -> Tensor:
    """``grad * [activation > 0]`` in place, with ReLU's own backward kernel (much faster
    than ``masked_fill_``)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, activation, 0.0, grad_input=grad)


def _views(flat: Tensor, shapes: list[tuple[int, ...]]) -> list[Tensor]:
    """Consecutive views of ``flat`` with the given shapes."""
    views, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        views.append(flat[start : start + size].view(shape))
        start += size
    return views


def _take(buffer: Tensor, shape: Sequence[int]) -> Tensor:
    """A contiguous view of the first entries of the flat ``buffer``, with ``shape``."""
    return buffer[: math.prod(shape)].view(tuple(shape))


def train_stacked_mlp(
    recipe: Recipe,
    data: DeviceData,
    masks: np.ndarray,
    seeds: np.ndarray,
    *,
    precision: str = "fp32",
    progress: Callable[[int], None] | None = None,
) -> ModelOutputs:
    """Train ``k = len(seeds)`` MLPs of ``recipe`` together and record their predictions.

    ``masks`` is (k, n) bool with the same number ``m`` of members per row; model j trains
    on ``masks[j]`` from ``seeds[j]`` (see :mod:`tailscope.engine.schedule`). The caller has
    checked :func:`uses_stacked_mlp`. ``progress(k)`` is called after every step.
    """
    k = len(seeds)
    modules = [init_model(recipe, data.feature_shape, data.n_classes, seed) for seed in seeds]
    widths = mlp_widths(modules[0], data.feature_shape)
    # bf16 on a CPU: float32 tensors, products in oneDNN's bf16 mode (see the module doc).
    bf16_on_cpu = precision == "bf16" and data.device.type == "cpu"
    dtype = torch.float32 if bf16_on_cpu else compute_dtype(precision)
    m = int(masks[0].sum())
    batch = min(recipe.batch_size, m)
    net = StackedMLP(modules, widths, batch, dtype, data.device)
    del modules
    optimizer = net.make_optimizer(recipe)
    x_train = data.x_train.reshape(len(data.x_train), -1).to(dtype)  # (n, d_0)

    products = fp32_products_in_bf16() if bf16_on_cpu else contextlib.nullcontext()
    with products:
        for order in islice(member_orders(masks, seeds), recipe.epochs):
            order_t = torch.from_numpy(order).to(data.device)  # (k, m): one transfer an epoch
            for start in range(0, m, batch):
                members = order_t[:, start : start + batch].reshape(-1)
                with record_function("tailscope.gather"):
                    x, y = net.gather(x_train, data.y_train, members)
                with record_function("tailscope.forward_backward"):
                    net.forward_backward(x, y)
                with record_function("tailscope.update"):
                    optimizer.step()
                    net.refresh_lp()
                if progress is not None:
                    progress(k)

    # A bf16 run predicts with bf16 copies on every device: no update follows, and a CPU
    # multiplies them faster than float32 tensors in bf16 mode.
    dtype = compute_dtype(precision)
    rows = _eval_rows(data.device, k, widths, dtype)
    net.prepare_eval(rows, dtype)
    x_train = x_train.to(dtype)
    x_test = data.x_test.reshape(len(data.x_test), -1).to(dtype)
    with record_function("tailscope.predict"):
        return predict_both_splits(net.logits, data, masks, x_train, x_test, rows)
