"""Findings of a run and their split-half replication (what docs/results.md reports).

For a trained run, at each FDR level (0.1 and 0.05 by default):

- the fit: mean accuracy of the models on their own training subsets and on the test set;
- memorization findings (``mem_q <= fdr``, ``mem >= 0.25``) and high-influence pair findings
  (``q <= fdr``, ``infl >= 0.15``, memorization a finding, same label), beside the paper's
  plain threshold counts and their mirrored (noise) counts, and the models an effect of the
  threshold's size needs for 80% power;
- split-half replication: the models split at random into halves A and B (independent runs
  of K/2), the findings of A, and the share of them that B confirms on its own models (same
  sign, one-sided exact p < 0.05); and the same with the halves' roles swapped.

    python benchmarks/findings_replication.py /work/runs/mnist-e10
    python benchmarks/findings_replication.py RUN --fdr 0.1 0.05 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import tailscope as ts
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.experiments import agreement, findings, split_half


def fit(run: ts.Run) -> tuple[float, float]:
    """Mean accuracy of the finished models on their own training subsets, and on the test
    set."""
    models = run.models_of()
    masks = np.asarray(run.store.masks[models])
    correct = run.store.rows("correct_train", models)
    own = (correct & masks).sum() / masks.sum()
    return float(own), float(np.mean(run.store.rows("correct_test", models)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a trained run directory")
    parser.add_argument("--fdr", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="split-half seeds")
    parser.add_argument("--infl", type=float, default=0.15)
    parser.add_argument("--mem", type=float, default=0.25)
    args = parser.parse_args()
    warnings.simplefilter("ignore", UndefinedEstimateWarning)

    run = ts.Run.open(args.run, writable=False)
    spec = run.spec
    own, test = fit(run)
    est = run.estimate()
    print(
        f"{run.path}: {spec.dataset.name}, recipe {spec.recipe['name']} "
        f"({spec.recipe['epochs']} epochs, lr {spec.recipe['lr']}), precision {spec.precision}, "
        f"K = {est.n_models} finished of {spec.n_models}"
    )
    print(f"fit: accuracy on the models' own subsets {100 * own:.2f}%, test {100 * test:.2f}%")
    ratio = spec.analysis_ratio
    for fdr in args.fdr:
        start = time.perf_counter()
        found = findings(est, infl=args.infl, mem=args.mem, fdr=fdr, ratio=ratio)
        print(f"\nFDR {fdr} ({time.perf_counter() - start:.0f} s)")
        print(
            f"{'':<14}{'findings':>9}{'plain':>9}{'mirrored':>9}{'tests':>14}{'cutoff':>10}"
            f"{'base':>6}{'K for 80% power':>17}"
        )
        for name, row in (("memorization", found.memorization), ("pairs", found.pairs)):
            needed = "> 1e6" if row.models_needed is None else f"{row.models_needed:,}"
            print(
                f"{name:<14}{row.findings:>9,}{row.threshold:>9,}{row.mirror:>9,}"
                f"{row.n_tests:>14,}{row.cutoff:>10.2g}{row.base_rate:>6.2f}{needed:>17}"
            )
        for seed in args.seeds:
            halves = split_half(est, random_state=seed)
            for name, (a, b) in (("A->B", halves), ("B->A", halves[::-1])):
                row = agreement(a, b, infl=args.infl, mem=args.mem, fdr=fdr)
                both_empty = row["pairs_a"] == row["pairs_b"] == 0
                jaccard_pairs = "- (no pairs)" if both_empty else f"{row['jaccard_pairs']:.2f}"
                print(
                    f"  split-half seed {seed} {name}: K/2 = {a.n_models}; memorization "
                    f"findings {row['mem_findings_a']:,}, replicated "
                    f"{_share(row['mem_replicated'])}; pair findings {row['pairs_a']:,}, "
                    f"replicated {_share(row['pairs_replicated'])}; Jaccard of the pairs "
                    f"{jaccard_pairs}"
                )


def _share(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.1f}%"


if __name__ == "__main__":
    main()
