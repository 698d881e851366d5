"""Calibrate the label-issue flagging rule on MNIST: how many examples each rule flags.

Trains K MLPs (the public demo's 784-512-256-10, SGD momentum 0.9, lr 0.1, batch 128) on
random 70% subsets of MNIST's train set, forms the out-of-sample class probabilities as a
run's store does (train: mean softmax over the models that did not train on the example;
test: over all models), and prints, for the test and train sets, how many examples
``label_issues`` flags under the margin rule at several thresholds and under cleanlab's
confident learning. ``--grid PNG`` draws the flagged test examples (given -> suggested label)
for a person to judge. The probabilities are cached in ``--cache`` so thresholds can be
revisited without retraining.

    nice -n 19 .venv/bin/python benchmarks/calibrate_label_issues.py --models 8 --epochs 5 \\
        --grid /tmp/flagged.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import tailscope as ts
from tailscope.scores.label_issues import label_issues


def train_pool(data, n_models: int, epochs: int, ratio: float, seed: int):
    """OOS probability sums and counts (train) and means (test) of K subset models."""
    x_train = torch.from_numpy(data.x_train.reshape(len(data.x_train), -1)).float() / 255
    x_test = torch.from_numpy(data.x_test.reshape(len(data.x_test), -1)).float() / 255
    y_train = torch.from_numpy(data.y_train).long()
    n, c = len(y_train), data.n_classes
    rng = np.random.default_rng(seed)
    prob_sum_train = np.zeros((n, c))
    out_count = np.zeros(n, dtype=np.int64)
    prob_sum_test = np.zeros((len(x_test), c))
    masks = np.zeros((n_models, n), dtype=bool)
    for k in range(n_models):
        start = time.time()
        torch.manual_seed(seed * 1000 + k)
        subset = rng.permutation(n)[: round(ratio * n)]
        masks[k, subset] = True
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 512),
            torch.nn.ReLU(),
            torch.nn.Linear(512, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, c),
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        idx = torch.from_numpy(subset)
        for _ in range(epochs):
            for batch in idx[torch.randperm(len(idx))].split(128):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
                loss.backward()
                opt.step()
        with torch.no_grad():
            p_train = torch.softmax(model(x_train), dim=1).double().numpy()
            p_test = torch.softmax(model(x_test), dim=1).double().numpy()
        held = ~masks[k]
        prob_sum_train[held] += p_train[held]
        out_count += held
        prob_sum_test += p_test
        acc = (p_test.argmax(1) == data.y_test).mean()
        print(f"model {k + 1}/{n_models}: test accuracy {acc:.4f} ({time.time() - start:.0f} s)")
    with np.errstate(invalid="ignore", divide="ignore"):
        oos_train = prob_sum_train / out_count[:, None]
    oos_train[out_count == 0] = np.nan
    return oos_train, prob_sum_test / n_models


def draw_grid(images, given, suggested, quality, path: Path, columns: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.3))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image, g, s, q in zip(np.ravel(axes), images, given, suggested, quality, strict=False):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(f"{g}->{s} {q:.2f}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=8, help="subset models K (default 8)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per model (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/tailscope_mnist_oos.npz"), help="npz cache"
    )
    parser.add_argument("--grid", type=Path, help="PNG of the flagged test examples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = ts.datasets.load("mnist")
    if args.cache.is_file():
        cached = np.load(args.cache)
        oos_train, oos_test = cached["oos_train"], cached["oos_test"]
        print(f"probabilities from {args.cache}")
    else:
        oos_train, oos_test = train_pool(data, args.models, args.epochs, 0.7, args.seed)
        np.savez(args.cache, oos_train=oos_train, oos_test=oos_test)
    for split, probs, labels in (
        ("test", oos_test, data.y_test),
        ("train", oos_train, data.y_train),
    ):
        defined = ~np.isnan(probs).any(axis=1)
        wrong = (probs[defined].argmax(1) != labels[defined]).sum()
        print(f"\n{split}: {defined.sum()} examples with OOS probabilities, {wrong} misclassified")
        for threshold in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5):
            flags = label_issues(probs, labels, threshold=threshold).label_issue.sum()
            print(f"  margin rule, threshold {threshold:.2f}: {flags:5d} flagged")
        try:
            flags = label_issues(probs, labels, rule="confident_learning").label_issue.sum()
            print(f"  cleanlab confident learning (defaults): {flags} flagged")
        except Exception as err:
            print(f"  cleanlab confident learning failed: {err}")
    if args.grid:
        result = label_issues(oos_test, data.y_test)
        order = np.argsort(result.label_quality)[: int(result.label_issue.sum())]
        draw_grid(
            data.x_test[order],
            data.y_test[order],
            result.suggested_label[order],
            result.label_quality[order],
            args.grid,
        )


if __name__ == "__main__":
    main()
