"""Built-in architectures: a ReLU MLP and a small CNN, both free of BatchNorm.

Every builder takes ``(feature_shape, n_classes)`` and returns a fresh module whose forward
maps a float32 batch ``(B, *feature_shape)`` to logits ``(B, n_classes)``. Weights keep
PyTorch's default initialisation, as in the paper's public demo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from torch import Tensor, nn

from tailscope.errors import DataError

__all__ = ["ChannelsFirst", "mlp", "small_cnn"]


def mlp(
    feature_shape: tuple[int, ...], n_classes: int, hidden: Sequence[int] = (512, 256)
) -> nn.Sequential:
    """Flatten → [Linear → ReLU] per hidden width → Linear(·, n_classes).

    With ``hidden=(512, 256)`` on MNIST this is the public demo's 784-512-256-10 network.
    """
    widths = [math.prod(feature_shape), *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for d_in, d_out in pairwise(widths):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], n_classes))
    return nn.Sequential(*layers)


class ChannelsFirst(nn.Module):
    """Reshape a batch of images to (B, C, H, W).

    ``layout`` is ``"hw"`` (grey images, a channel axis is added), ``"chw"`` (already
    channels-first) or ``"hwc"`` (channels-last, permuted).
    """

    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout = layout

    def forward(self, x: Tensor) -> Tensor:
        if self.layout == "hw":
            return x.unsqueeze(-3)
        if self.layout == "hwc":
            return x.movedim(-1, -3)
        return x

    def extra_repr(self) -> str:
        return f"layout={self.layout!r}"


def image_layout(feature_shape: tuple[int, ...]) -> tuple[str, int, int, int]:
    """``(layout, channels, height, width)`` of an image feature shape.

    A 3-D shape is channels-last when its last axis has 1, 3 or 4 entries and its first
    does not; otherwise channels-first.
    """
    if len(feature_shape) == 2:
        return ("hw", 1, *feature_shape)
    if len(feature_shape) == 3:
        a, h, w = feature_shape
        if w in (1, 3, 4) and a not in (1, 3, 4):
            return ("hwc", w, a, h)
        return ("chw", a, h, w)
    raise DataError(
        f"the cnn recipe needs image features of shape (H, W), (C, H, W) or (H, W, C), "
        f"got examples of shape {tuple(feature_shape)}"
    )


def small_cnn(
    feature_shape: tuple[int, ...],
    n_classes: int,
    channels: tuple[int, int] = (32, 64),
    hidden: int = 128,
) -> nn.Sequential:
    """[conv3x3 → ReLU → maxpool2] x 2 → Linear(·, hidden) → ReLU → Linear(hidden, n_classes).

    Convolutions are padded ("same" size); pooling rounds up, so 8x8 digits become 2x2 maps
    and 28x28 MNIST images 7x7.
    """
    layout, c, h, w = image_layout(feature_shape)
    for _ in range(2):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    c1, c2 = channels
    return nn.Sequential(
        ChannelsFirst(layout),
        nn.Conv2d(c, c1, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(c1, c2, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(c2 * h * w, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )
