"""Shared fixtures: a tiny real dataset and a fast recipe, so runs train in seconds."""

from __future__ import annotations

import pytest
import torch

import tailscope as ts
from tailscope.engine import precision


def tiny_mlp(shape, n_classes):
    d = 1
    for s in shape:
        d *= s
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, n_classes)
    )


@pytest.fixture(scope="session", autouse=True)
def fp32_unless_asked():
    """``precision="auto"`` (the default) resolves to fp32 in every test, so that the suite
    means the same on CPUs with and without native bf16; tests of bf16 ask for it, and tests
    of ``auto`` patch :func:`~tailscope.engine.precision.bf16_is_native` themselves.
    Session-scoped, so that it holds for module- and session-scoped fixtures too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "bf16_is_native", lambda device="cpu": False)
        yield


@pytest.fixture(scope="session")
def digits():
    """A 300/100 stratified subset of scikit-learn's digits."""
    return ts.datasets.load("digits", n_train=300, n_test=100, random_state=0)


@pytest.fixture
def tiny_recipe():
    return ts.Recipe(name="tiny-mlp", build=tiny_mlp, epochs=2, batch_size=32, lr=0.1, momentum=0.9)
