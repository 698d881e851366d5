"""A PNG gallery of the examples a run's label-issue scores flag, for a person to judge.

After ``tailscope scores RUN``: the flagged examples of one split, lowest label quality
first, each with its given and suggested label, as one image (``--out``); and how many were
flagged. A person looks at it and counts the flags they agree with (a wrong or ambiguous
label), which is what docs/results.md reports.

    python benchmarks/label_gallery.py RUN --split test --out /tmp/flags.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import tailscope as ts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("--split", choices=["train", "test"], default="test")
    parser.add_argument("--out", default="label_flags.png")
    parser.add_argument("--most", type=int, default=120, help="at most this many examples")
    parser.add_argument("--columns", type=int, default=12)
    args = parser.parse_args()

    run = ts.Run.open(args.run, writable=False)
    table = run.store.load_result(f"{args.split}_scores")
    if table is None:
        raise SystemExit(f"no {args.split}_scores.csv in {run.path}: run `tailscope scores` first")
    data = run.dataset
    images = data.x_train if args.split == "train" else data.x_test
    position = {
        int(i): p
        for p, i in enumerate(data.train_index if args.split == "train" else data.test_index)
    }
    flagged = table[table["label_issue"].astype(bool)].sort_values("label_quality")
    print(
        f"{len(flagged)} of {len(table)} {args.split} examples flagged "
        f"({100 * len(flagged) / len(table):.2f}%); showing {min(len(flagged), args.most)}"
    )
    shown = flagged.head(args.most)
    rows = max(1, -(-len(shown) // args.columns))
    fig, axes = plt.subplots(rows, args.columns, figsize=(1.2 * args.columns, 1.45 * rows))
    names = data.class_names
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, r in zip(np.ravel(axes), shown.itertuples(index=False), strict=False):
        ax.imshow(images[position[int(r.index)]], cmap="gray")
        suggested = "-" if np.isnan(r.suggested_label) else names[int(r.suggested_label)]
        ax.set_title(
            f"#{int(r.index)} {names[int(r.label)]}>{suggested}\n{r.label_quality:.2f}", fontsize=6
        )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} (title: index, given label > suggested label, label quality)")


if __name__ == "__main__":
    main()
