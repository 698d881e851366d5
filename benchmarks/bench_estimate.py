"""Estimation cost at the paper's scale: K=2000 models, n=60000 train, t=10000 test examples.

Each task runs in its own subprocess on the same synthetic data (drawn there from a fixed
seed), so that its peak resident memory is its own:

- ``memorization``: ``tailscope.estimate.memorization(masks, correct_train)``;
- ``memorization`` includes its exact p-values, q-values and intervals;
- ``influence``: ``tailscope.estimate.influence(masks, correct_test, top_k=10,
  threshold=0.15)``, the top-10 train examples of every test example and every pair with
  influence >= 0.15 (exact counts: the inputs are 0/1);
- ``influence fdr``: the same with ``fdr=0.1``: the findings, Benjamini-Hochberg over all
  n x t pairs with exact one-sided p-values (streamed: no n x t array);
- ``dense matmul``: one float32 ``torch.mm`` of the same shape, ``masks^T (n, K) @
  correct_test (K, t)``, the core of the dense influence matrix and nothing else.

The synthetic run: model k trains on a random 70% of the train split; train examples are
classified correctly with probability 0.95 when trained on and 0.75 otherwise; 1000 test
examples each depend on one train example (correct when it was trained on, else with
probability 0.3), the others are correct with probability 0.8.

    python benchmarks/bench_estimate.py
    python benchmarks/bench_estimate.py --models 500 --train 10000 --test 2000   # smaller
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

TASKS = ("memorization", "influence", "influence fdr", "dense matmul")


def synthetic_run(n_models: int, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """Masks (K, n), correct_train (K, n), correct_test (K, t), all bool; drawn 100 models
    at a time, so that drawing them adds little to the peak memory."""
    rng = np.random.default_rng(0)
    masks = np.empty((n_models, n_train), dtype=bool)
    correct_train = np.empty((n_models, n_train), dtype=bool)
    correct_test = np.empty((n_models, n_test), dtype=bool)
    linked = min(1000, n_test)
    source = rng.choice(n_train, linked, replace=False)
    for start in range(0, n_models, 100):
        rows = slice(start, min(start + 100, n_models))
        k = rows.stop - rows.start
        masks[rows] = rng.random((k, n_train), dtype=np.float32) < 0.7
        p_train = np.where(masks[rows], np.float32(0.95), np.float32(0.75))
        correct_train[rows] = rng.random((k, n_train), dtype=np.float32) < p_train
        correct_test[rows] = rng.random((k, n_test), dtype=np.float32) < 0.8
        guess = rng.random((k, linked), dtype=np.float32) < 0.3
        correct_test[rows, :linked] = masks[rows][:, source] | guess
    return {"masks": masks, "correct_train": correct_train, "correct_test": correct_test}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_task(task: str, n_models: int, n_train: int, n_test: int) -> dict[str, object]:
    from tailscope.estimate import influence, memorization

    data = synthetic_run(n_models, n_train, n_test)
    baseline = peak_rss_mb()
    start = time.perf_counter()
    detail = ""
    if task == "memorization":
        mem = memorization(data["masks"], data["correct_train"]).value
        detail = f"mean mem {np.nanmean(mem):.3f}"
    elif task == "influence":
        result = influence(data["masks"], data["correct_test"], top_k=10, threshold=0.15)
        detail = f"{len(result.pairs)} pairs >= 0.15"
    elif task == "influence fdr":
        result = influence(data["masks"], data["correct_test"], top_k=10, threshold=0.15, fdr=0.1)
        detail = (
            f"{len(result.pairs)} findings >= 0.15 at FDR 0.1 of {result.n_tests:,} tests "
            f"(cutoff {result.cutoff:.2g})"
        )
    else:
        left = torch.from_numpy(data["masks"]).T.to(torch.float32)  # (n, K)
        right = torch.from_numpy(data["correct_test"]).to(torch.float32)  # (K, t)
        start = time.perf_counter()  # the conversions above are not the matmul
        dense = torch.mm(left, right)
        detail = f"output {tuple(dense.shape)} float32, {dense.numel() * 4 / 2**30:.1f} GiB"
    seconds = time.perf_counter() - start
    return {
        "task": task,
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "data_rss_mb": baseline,
        "detail": detail,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--train", type=int, default=60000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--task", choices=TASKS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shape = (args.models, args.train, args.test)

    if args.task is not None:  # a child: one task, one JSON line
        print(json.dumps(run_task(args.task, *shape)))
        return

    print(
        f"K={args.models}, n={args.train}, t={args.test}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    forwarded = [f"--models={args.models}", f"--train={args.train}", f"--test={args.test}"]
    if args.threads is not None:
        forwarded.append(f"--threads={args.threads}")
    results = []
    for task in TASKS:
        print(f"  {task} ...", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, f"--task={task}", *forwarded],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))

    dense = next(r for r in results if r["task"] == "dense matmul")
    header = (
        f"{'task':<15}{'seconds':>9}{'vs dense':>10}{'peak RSS MB':>13}{'of it inputs':>14}  detail"
    )
    print("\n" + header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['task']:<15}{r['seconds']:>9.2f}{r['seconds'] / dense['seconds']:>10.2f}"
            f"{r['peak_rss_mb']:>13.0f}{r['data_rss_mb']:>14.0f}  {r['detail']}"
        )


if __name__ == "__main__":
    main()
