"""Per-example scores at the scale of the authors' MNIST C-score release: K=1800 models
(ratios 0.1, ..., 0.9, 200 each), n=60000 train, t=10000 test, C=10 classes.

Each task runs in its own subprocess on the same synthetic data (drawn there from a fixed
seed), so that its peak resident memory is its own:

- ``heldout+cscore``: held-out accuracy per ratio and the C-score, train and test;
- ``vulnerability``: the per-example AUC of in vs out phi, within each ratio (ranks of
  200 values per example and ratio), as ``compute_scores`` does in a multi-ratio run;
- ``lira``: the leave-one-model-out evaluation of the five attack variants on all 1800
  models, as for a single-ratio run of that size: a timing of the worst case (targets
  thinned to ``MAX_PAIRS`` = 2**26 pairs); the pool mixes ratios, so its AUCs are inflated.
- ``labels``: label quality and flags from (n, C) out-of-sample probabilities (cleanlab).

The synthetic run: phi[k, i] ~ N(mu_i + d_i sigma_i [i in S_k] + ratio_k, sigma_i^2), with
mu_i ~ N(4, 3), sigma_i ~ U(0.5, 2), d_i = 3 for 1% of the examples, else U(0, 0.5);
correct = phi > 0.

    nice -n 19 python benchmarks/bench_scores.py
    nice -n 19 python benchmarks/bench_scores.py --per-ratio 20 --train 10000   # smaller
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

TASKS = ("heldout+cscore", "vulnerability", "lira", "labels")
RATIOS = tuple(round(0.1 * r, 1) for r in range(1, 10))


def synthetic_run(per_ratio: int, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """masks, ratios, correct_train/test, phi_train (float16), drawn 100 models at a time."""
    rng = np.random.default_rng(0)
    ratios = np.repeat(RATIOS, per_ratio)
    n_models = len(ratios)
    mu = rng.normal(4, 3, n_train).astype(np.float32)
    sigma = rng.uniform(0.5, 2, n_train).astype(np.float32)
    d = np.where(rng.random(n_train) < 0.01, 3.0, rng.uniform(0, 0.5, n_train)).astype(np.float32)
    mu_test = rng.normal(4, 3, n_test).astype(np.float32)
    masks = np.empty((n_models, n_train), dtype=bool)
    phi = np.empty((n_models, n_train), dtype=np.float16)
    correct_test = np.empty((n_models, n_test), dtype=bool)
    for start in range(0, n_models, 100):
        rows = slice(start, min(start + 100, n_models))
        k = rows.stop - rows.start
        r = ratios[rows, None].astype(np.float32)
        masks[rows] = rng.random((k, n_train), dtype=np.float32) < r
        noise = rng.standard_normal((k, n_train), dtype=np.float32)
        phi[rows] = mu + d * sigma * masks[rows] + r + sigma * noise
        correct_test[rows] = mu_test + r + rng.standard_normal((k, n_test), dtype=np.float32) > 0
    return {
        "masks": masks,
        "ratios": ratios,
        "phi": phi,
        "correct_train": phi > 0,
        "correct_test": correct_test,
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_task(task: str, per_ratio: int, n_train: int, n_test: int) -> dict[str, object]:
    from tailscope.scores import (
        cscore,
        heldout_accuracy,
        label_issues,
        lira_evaluation,
        vulnerability,
    )

    if task == "labels":
        rng = np.random.default_rng(1)
        probs = rng.dirichlet(np.full(10, 0.05), n_train)
        labels = rng.integers(0, 10, n_train)
        data = None
    else:
        data = synthetic_run(per_ratio, n_train, n_test)
    baseline = peak_rss_mb()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "heldout+cscore":
            held = heldout_accuracy(data["correct_train"], data["masks"], data["ratios"])
            score, _ = cscore(data["correct_test"], data["ratios"])
            detail = f"mean held-out acc {np.nanmean(held.accuracy):.3f}, test C {score.mean():.3f}"
        elif task == "vulnerability":
            vuln, _ = vulnerability(data["masks"], data["phi"], data["ratios"])
            detail = f"mean vulnerability {np.nanmean(vuln):.3f}"
        elif task == "lira":
            ev = lira_evaluation(data["masks"], data["phi"])
            detail = (
                ", ".join(f"{v} {r.auc:.3f}/{100 * r.tprs[0]:.2f}%" for v, r in ev.roc.items())
                + f" (AUC/TPR@0.1%, {ev.n_pairs:.3g} pairs)"
            )
        else:
            result = label_issues(probs, labels)
            detail = f"{result.label_issue.sum()} flagged of {n_train} (random labels)"
    return {
        "task": task,
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "data_rss_mb": baseline,
        "detail": detail,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-ratio", type=int, default=200, help="models per ratio (200)")
    parser.add_argument("--train", type=int, default=60000, help="train examples (60000)")
    parser.add_argument("--test", type=int, default=10000, help="test examples (10000)")
    parser.add_argument("--only", choices=TASKS, default=None, help="run one task")
    parser.add_argument("--task", choices=TASKS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.per_ratio, args.train, args.test)
    if args.task is not None:  # a child: one task, one JSON line
        print(json.dumps(run_task(args.task, *shape)))
        return

    print(f"K={9 * args.per_ratio} ({args.per_ratio} per ratio), n={args.train}, t={args.test}")
    forwarded = [f"--per-ratio={args.per_ratio}", f"--train={args.train}", f"--test={args.test}"]
    results = []
    for task in [args.only] if args.only else TASKS:
        print(f"  {task} ...", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, f"--task={task}", *forwarded],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    header = f"{'task':<16}{'seconds':>9}{'peak RSS MB':>13}{'of it inputs':>14}  detail"
    print("\n" + header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['task']:<16}{r['seconds']:>9.1f}{r['peak_rss_mb']:>13.0f}"
            f"{r['data_rss_mb']:>14.0f}  {r['detail']}"
        )


if __name__ == "__main__":
    main()
