"""C-scores of a multi-ratio run against the authors' released MNIST C-scores.

For a trained run (``tailscope train RUN --ratio 0.1,0.2,...,0.9``) on full MNIST, in the
official train order:

- ``ours``: the run's C-score (:func:`tailscope.scores.cscore`: held-out accuracy per
  ratio, averaged uniformly over the ratios) against the release: Pearson over all train
  examples, Spearman over the tail (released C-score < 0.9);
- ``filled``: the same over every example, where an example no model of some ratio held
  out takes the held-out accuracy of the ratio below (the library leaves it NaN);
- ``ratio r only``: the plain held-out accuracy of one ratio's models (what a single-ratio
  run gives) against the release, for scale;
- ``split-half ceiling``: each ratio's models split at random into halves A and B; the
  C-score of A against that of B (over all examples, and over the release's tail). Our
  C-score can agree with the release no better than two halves of our own run agree with
  each other, scaled up for the full run's lower noise (Spearman-Brown: 2r / (1 + r)).

    python benchmarks/cscore_agreement.py /work/runs/mnist-cscore \\
        --released ../shared/reference/mnist_cscores.npz
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import tailscope as ts
from tailscope.scores import compare_cscores, cscore, heldout_accuracy, load_released_cscores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a trained multi-ratio run on full MNIST")
    parser.add_argument("--released", required=True, help="the released C-scores (.npz)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split into halves")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    run = ts.Run.open(args.run, writable=False)
    store, spec = run.store, run.spec
    released = load_released_cscores(args.released, labels=store.y_train)
    models = store.finished()
    ratios = np.repeat(spec.ratios, spec.n_models)[models]
    masks = np.asarray(store.masks[models])
    correct = store.rows("correct_train", models)
    counts = {float(r): int((ratios == r).sum()) for r in spec.ratios}
    print(
        f"{run.path}: {spec.dataset.name}, recipe {spec.recipe['name']}, "
        f"{spec.recipe['epochs']} epochs, {len(models)} models "
        f"({', '.join(f'{r:g}: {k}' for r, k in counts.items())})"
    )

    rows = []
    ours, _ = cscore(correct, ratios, masks)
    rows.append(("ours: C-score over all ratios", compare_cscores(ours, released)))
    held = heldout_accuracy(correct, masks, ratios)
    # Over all examples: where no model of a ratio held an example out (with K per ratio,
    # a share ratio**K of them), take the held-out accuracy of the ratio below instead.
    filled = held.ratio_accuracy.copy()
    for position in range(1, len(filled)):
        missing = np.isnan(filled[position])
        filled[position, missing] = filled[position - 1, missing]
    rows.append(
        (
            "ours, a missing ratio filled from the one below",
            compare_cscores(filled.mean(0), released),
        )
    )
    for position, r in enumerate(held.ratios):
        if np.isclose(r, 0.7) or position in (0, len(held.ratios) - 1):
            single = held.ratio_accuracy[position]
            rows.append((f"ratio {r:g} only: held-out accuracy", compare_cscores(single, released)))

    rng = np.random.default_rng(args.seed)
    half = np.zeros(len(models), dtype=bool)
    for r in spec.ratios:
        members = np.flatnonzero(ratios == r)
        half[rng.permutation(members)[: len(members) // 2]] = True
    score_a, _ = cscore(correct[half], ratios[half], masks[half])
    score_b, _ = cscore(correct[~half], ratios[~half], masks[~half])
    from scipy import stats

    both = ~np.isnan(score_a) & ~np.isnan(score_b)
    tail = both & (released < 0.9)
    pearson = float(stats.pearsonr(score_a[both], score_b[both]).statistic)
    spearman_tail = float(stats.spearmanr(score_a[tail], score_b[tail]).statistic)

    print()
    print("| C-score | Pearson (all) | examples | Spearman (tail < 0.9) | tail examples |")
    print("|---|---:|---:|---:|---:|")
    for name, c in rows:
        print(
            f"| {name} | {c['pearson']:.4f} | {c['n']:,} | {c['spearman_tail']:.4f} | "
            f"{c['n_tail']:,} |"
        )
    print(
        f"| split-half: half A vs half B | {pearson:.4f} | {int(both.sum()):,} | "
        f"{spearman_tail:.4f} | {int(tail.sum()):,} |"
    )
    print(
        f"| split-half, stepped up to the full run (2r/(1+r)) | {2 * pearson / (1 + pearson):.4f} "
        f"| | {2 * spearman_tail / (1 + spearman_tail):.4f} | |"
    )


if __name__ == "__main__":
    main()
