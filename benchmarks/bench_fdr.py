"""Cost of pass 1 of the streamed FDR over the influence family (``InfluenceFDR.observe``).

The influence scan of K=2000 models, n=60000 train and t=10000 test examples hands over
chunks of exact counts ``in_count`` (t, c) with the chunk's ``k_in`` (c,); pass 1 bins every
pair's one-sided Fisher p-value through a table per distinct k_in and keeps the pairs in the
lowest bins. This script times that work on synthetic chunks drawn from the null (each count
hypergeometric given its test's hits and its train example's k_in), with test accuracies
spread like a trained classifier's (most near 1, a tail of hard examples):

- ``tables``: building the bin table of one k_in (once per distinct k_in per scan);
- ``sorted``: a chunk whose train columns are ordered by k_in (as when the scan orders its
  train rows by k_in: a chunk then holds 1-3 distinct values, each a view of the chunk);
- ``unsorted``: a chunk of train columns in their own order (~100-160 distinct k_in values:
  one block of mixed k_in whose per-pair thresholds are gathered from a small table);
- ``memorization``: :func:`fisher_pvalues` and :func:`bh_qvalues` over n dense counts.

The tables are built before the timed passes (as after the first chunks of a scan), so the
per-pair figures are steady state; the table total is reported apart.

    python benchmarks/bench_fdr.py
    python benchmarks/bench_fdr.py --models 4000 --chunk 2048 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tailscope.estimate.fdr import InfluenceFDR, bh_qvalues
from tailscope.estimate.significance import fisher_pvalues


def null_chunk(rng, n_models, test_hits, k_in):
    """(t, c) int32 counts drawn from the null: hypergeometric given hits and k_in."""
    h = test_hits[:, None]
    return rng.hypergeometric(h, n_models - h, k_in[None, :]).astype(np.int32)


def best_of(repeats, function):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--train", type=int, default=60000, help="n, for the projection")
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--chunk", type=int, default=2048, help="train columns per chunk")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    K, t, c = args.models, args.test, args.chunk
    accuracy = rng.beta(8.0, 1.5, t)
    test_hits = rng.binomial(K, accuracy).astype(np.int64)
    k_all = rng.binomial(K, 0.7, args.train)
    k_sorted = np.sort(k_all)[args.train // 2 - c // 2 :][:c]  # a middle chunk, sorted
    k_unsorted = k_all[:c]
    print(
        f"K={K}, t={t}, chunk={c} train columns ({t * c / 1e6:.1f}M pairs); torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; "
        f"{len(np.unique(k_all))} distinct k_in over n={args.train}"
    )

    fdr = InfluenceFDR(K, test_hits, q=0.1)
    start = time.perf_counter()
    for k in np.unique(k_all):
        fdr._table(int(k))
        for level in (fdr._extract, *fdr._coarse):
            fdr._threshold(int(k), level)
    table_seconds = time.perf_counter() - start
    n_k = len(np.unique(k_all))
    widths = [fdr._tables[int(k)].width for k in np.unique(k_all)]
    print(
        f"tables: {n_k} distinct k_in, {table_seconds:.2f} s ({1e3 * table_seconds / n_k:.1f} "
        f"ms each), band width {min(widths)}-{max(widths)}, "
        f"{sum(t.bins.nbytes for t in fdr._tables.values()) / 2**20:.0f} MiB"
    )

    rows = []
    for name, k_in in (("sorted", k_sorted), ("unsorted", k_unsorted)):
        in_count = null_chunk(rng, K, test_hits, k_in)
        train = np.arange(c)

        def observe(in_count=in_count, k_in=k_in, train=train):
            fdr.observe(in_count, k_in, train)

        seconds = best_of(args.repeats, observe)
        per_1e8 = seconds / (t * c) * 1e8
        rows.append((name, len(np.unique(k_in)), seconds, per_1e8))
    print(f"\n{'chunk':<10}{'k_in values':>12}{'s/chunk':>10}{'s per 1e8 pairs':>17}")
    for name, n_values, seconds, per_1e8 in rows:
        print(f"{name:<10}{n_values:>12}{seconds:>10.3f}{per_1e8:>17.3f}")
    n_pairs = args.train * t
    print(
        f"\nprojection for n x t = {n_pairs / 1e8:.1f}e8 pairs: sorted "
        f"{rows[0][3] * n_pairs / 1e8:.1f} s, unsorted {rows[1][3] * n_pairs / 1e8:.1f} s, "
        f"plus {table_seconds:.1f} s of tables"
    )

    hits_in = rng.binomial(k_all, 0.9)
    k_out = K - k_all
    hits_out = rng.binomial(k_out, 0.85)
    start = time.perf_counter()
    p = fisher_pvalues(hits_in, k_all, hits_out, k_out)
    fisher_seconds = time.perf_counter() - start
    start = time.perf_counter()
    bh_qvalues(p)
    print(
        f"memorization, n={args.train}: fisher_pvalues {fisher_seconds:.2f} s, bh_qvalues "
        f"{time.perf_counter() - start:.3f} s"
    )


if __name__ == "__main__":
    main()
