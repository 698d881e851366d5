"""Shared fixtures: a tiny real dataset and a fast recipe, so runs train in seconds."""

from __future__ import annotations

import pytest
import torch

import tailscope as ts


def tiny_mlp(shape, n_classes):
    d = 1
    for s in shape:
        d *= s
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, n_classes)
    )


@pytest.fixture(scope="session")
def digits():
    """A 300/100 stratified subset of scikit-learn's digits."""
    return ts.datasets.load("digits", n_train=300, n_test=100, random_state=0)


@pytest.fixture
def tiny_recipe():
    return ts.Recipe(name="tiny-mlp", build=tiny_mlp, epochs=2, batch_size=32, lr=0.1, momentum=0.9)
