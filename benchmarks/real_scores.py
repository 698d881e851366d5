"""Every per-example score on real model outputs: a multi-ratio pool of small MLPs.

Trains K = 9 x ``--per-ratio`` one-hidden-layer MLPs at once (batched matmuls, each model
its own subset and batches, SGD momentum 0.9) on random subsets of ratios 0.1, ..., 0.9 of
a dataset's train split, records what a run's store records (masks, ratios, correctness,
logit margins phi, out-of-sample class probabilities), and prints what
``tailscope.scores.compute_scores`` makes of it: the LiRA evaluation table, the
vulnerability-by-memorization table, the C-score summary and the label flags. With
``--flip`` a fraction of the train labels is flipped first, and the flags' recall of the
flips is reported.

    nice -n 19 python benchmarks/real_scores.py                         # digits, ~1 min
    nice -n 19 python benchmarks/real_scores.py --ratios 0.5 --per-ratio 128     # LiRA's setting
    nice -n 19 python benchmarks/real_scores.py --dataset mnist --train 10000 --per-ratio 32
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

import tailscope as ts
from tailscope.estimate import memorization
from tailscope.scores import compute_scores, vulnerability_by_memorization

RATIOS = tuple(round(0.1 * r, 1) for r in range(1, 10))


def logit_margins(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(phi, correct) from logits (..., n, C): phi = z_y - logsumexp_{c != y} z_c."""
    z_y = logits.gather(-1, y.expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, y.expand(*logits.shape[:-1]).unsqueeze(-1), float("-inf"))
    return z_y - torch.logsumexp(others, dim=-1), logits.argmax(-1) == y


def train_pool(x, y, x_test, y_test, n_classes, args):
    """Masks, ratios and the store's per-model arrays for the pool."""
    gen = torch.Generator().manual_seed(args.seed)
    n, d = x.shape
    ratios = np.repeat(args.ratios, args.per_ratio)
    k = len(ratios)
    rank = torch.rand(k, n, generator=gen).argsort(dim=1).argsort(dim=1)
    sizes = torch.from_numpy(np.round(ratios * n).astype(np.int64))
    masks = rank < sizes[:, None]
    members = rank.argsort(dim=1)  # row k: its members first
    w1 = (torch.randn(k, d, args.hidden, generator=gen) / d**0.5).requires_grad_()
    b1 = torch.zeros(k, 1, args.hidden, requires_grad=True)
    w2 = (torch.randn(k, args.hidden, n_classes, generator=gen) / args.hidden**0.5).requires_grad_()
    b2 = torch.zeros(k, 1, n_classes, requires_grad=True)
    params = [w1, b1, w2, b2]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)

    def forward(inputs):  # inputs (k, b, d) or (b, d)
        return torch.relu(inputs @ w1 + b1) @ w2 + b2

    steps = args.epochs * int(np.ceil(0.5 * n / args.batch))
    for _ in range(steps):
        pick = (torch.rand(k, args.batch, generator=gen) * sizes[:, None]).long()
        idx = members.gather(1, pick)
        loss = (
            torch.nn.functional.cross_entropy(
                forward(x[idx]).reshape(-1, n_classes), y[idx].reshape(-1), reduction="mean"
            )
            * k
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits_train, logits_test = forward(x), forward(x_test)
        phi, correct_train = logit_margins(logits_train, y)
        _, correct_test = logit_margins(logits_test, y_test)
        p_train = torch.softmax(logits_train.double(), -1)
        held = (~masks).double()
        with np.errstate(invalid="ignore"):
            oos_train = (held.T[:, :, None] * p_train.transpose(0, 1)).sum(1).numpy()
            oos_train /= held.sum(0).numpy()[:, None]
        oos_test = torch.softmax(logits_test.double(), -1).mean(0).numpy()
    return {
        "masks": masks.numpy(),
        "ratios": ratios,
        "correct_train": correct_train.numpy(),
        "correct_test": correct_test.numpy(),
        "phi_train": phi.numpy().astype(np.float16),
        "oos_prob_train": oos_train,
        "oos_prob_test": oos_test,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="a tailscope dataset (digits)")
    parser.add_argument("--train", type=int, default=None, help="train examples (all)")
    parser.add_argument(
        "--ratios", type=float, nargs="+", default=RATIOS, help="subset ratios (0.1 ... 0.9)"
    )
    parser.add_argument("--per-ratio", type=int, default=24, help="models per ratio (24)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden units (128)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of a half subset (30)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (64)")
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (0.05)")
    parser.add_argument("--flip", type=float, default=0.0, help="fraction of labels flipped")
    parser.add_argument("--seed", type=int, default=0, help="seed (0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = ts.datasets.load(args.dataset)
    if args.train:
        data = data.subset(n_train=args.train, random_state=args.seed)
    x = torch.from_numpy(data.x_train.reshape(data.n_train, -1)).float()
    x_test = torch.from_numpy(data.x_test.reshape(data.n_test, -1)).float()
    scale = x.max()
    x, x_test = x / scale, x_test / scale
    y_true = data.y_train.astype(np.int64)
    y_given = y_true.copy()
    rng = np.random.default_rng(args.seed)
    flipped = rng.random(len(y_true)) < args.flip
    y_given[flipped] = (y_true[flipped] + rng.integers(1, data.n_classes, flipped.sum())) % (
        data.n_classes
    )
    start = time.time()
    arrays = train_pool(
        x,
        torch.from_numpy(y_given),
        x_test,
        torch.from_numpy(data.y_test.astype(np.int64)),
        data.n_classes,
        args,
    )
    print(
        f"{len(arrays['ratios'])} models on {data.name} (n={data.n_train}, t={data.n_test}) "
        f"in {time.time() - start:.0f} s; test accuracy by ratio: "
        + ", ".join(
            f"{r:g}: {arrays['correct_test'][arrays['ratios'] == r].mean():.3f}"
            for r in args.ratios
        )
    )
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tables = compute_scores(y_given, data.y_test, **arrays)
        mem, _ = memorization(arrays["masks"], arrays["correct_train"])
    print(
        f"scores in {time.time() - start:.1f} s; skipped: {tables.skipped}; notes: {tables.notes}"
    )
    print("\nLiRA, leave-one-model-out:")
    print(tables.lira.frame().to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("\nvulnerability by memorization:")
    table = vulnerability_by_memorization(tables.train["vulnerability"], mem)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"Spearman(vulnerability, mem) = {table.attrs['spearman']:.3f}")
    train, test = tables.train.copy(), tables.test.copy()
    if "cscore" not in train:
        train["cscore"], test["cscore"] = train["heldout_acc"], test["heldout_acc"]
    print(
        f"\nC-score: train mean {train['cscore'].mean():.3f}, test mean "
        f"{test['cscore'].mean():.3f}; corr(train cscore, mem) = "
        f"{np.corrcoef(train['cscore'].fillna(0.5), np.nan_to_num(mem))[0, 1]:.3f}"
    )
    print(
        f"label issues: train {train['label_issue'].sum()} of {len(train)}, "
        f"test {test['label_issue'].sum()} of {len(test)}"
    )
    if flipped.any():
        flags = train["label_issue"].to_numpy()
        print(
            f"flips {flipped.sum()}: flag recall {(flags & flipped).sum() / flipped.sum():.3f}, "
            f"precision {(flags & flipped).sum() / max(flags.sum(), 1):.3f}"
        )


if __name__ == "__main__":
    main()
