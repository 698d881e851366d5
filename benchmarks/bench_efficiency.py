"""Models each memorization estimator needs, measured on real runs (issue 11, part 5).

For each run, the finished models of one subset ratio (0.7) are split into a reference set
(the first ``--ref-models``) and a disjoint pool. The reference memorization is the plain
estimator on the reference models, with its own noise ``var_ref_i = se_ref_i^2``. For each K
and each estimator of ``tailscope.estimate.efficiency``, K models are drawn from the pool
(``max(--repeats, pool // K)`` draws, disjoint until the pool runs out, then it is reshuffled) and
every estimator runs on the same draw. Reported per (K, estimator):

- **RMSE**: ``sqrt(max(mean_i (mem_hat - mem_ref)^2 - mean_i var_ref_i, 0))``, the error
  against the truth once the reference's own noise is taken out, averaged over repeats;
- estimators: ``plain``; ``covariate``, adjusted for each model's test accuracy;
  ``covariate (class)``, for each model's test accuracy on the example's class (per model
  and example: closer to the example, but a training example can move its class's test
  accuracy, which the adjustment then takes out of its memorization); ``margin``;
  ``shrunk`` (``--bins`` out-rate bins);
- **SE/RMSE**: the estimator's root mean squared reported SE over that RMSE (1 = honest SEs);
- **bias by decile** of reference memorization. Deciles chosen and errors measured on the
  same noisy reference would show regression to the mean (its top decile is too high by
  selection) even for an unbiased estimator, so the reference models are split in halves:
  half A ranks the examples into deciles, the error is measured against half B. The plain
  estimator's row is the control; ``noise`` is the standard error half B alone adds to a
  decile's bias. Reported: the worst |bias| over the deciles, and the top decile's bias.

Then, per estimator, the K at which its RMSE reaches the plain estimator's RMSE at the
largest K (linear interpolation of RMSE on log K), and the verdict of the issue's rule: an
estimator may become the default only if |bias| <= 0.005 in every decile at every K AND it
reaches the plain RMSE with at most half the models.

    python benchmarks/bench_efficiency.py /work/runs/eff-digits --ref-models 3000
    python benchmarks/bench_efficiency.py RUN_A RUN_B --ref-models 3000 1500 --repeats 8
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import tailscope as ts
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.estimate.efficiency import covariate_adjusted, margin_based, plain, shrunk

BIAS_LIMIT = 0.005
DECILES = 10


def estimators(bins: int) -> dict:
    """name -> function(masks, correct, margins, quality, class_quality) -> (estimate, se)."""
    return {
        "plain": lambda m, c, g, q, qc: plain(m, c),
        "covariate": lambda m, c, g, q, qc: covariate_adjusted(m, c, q),
        "covariate (class)": lambda m, c, g, q, qc: covariate_adjusted(m, c, qc),
        "margin": lambda m, c, g, q, qc: margin_based(m, g),
        "shrunk": lambda m, c, g, q, qc: shrunk(m, c, bins=bins),
    }


def load(path: str, ref_models: int, ratio: float):
    run = ts.Run.open(path, writable=False)
    models = run.models_of(ratio)
    if len(models) <= ref_models + 1:
        raise SystemExit(f"{path}: {len(models)} finished models, need more than {ref_models}")
    store = run.store
    masks = np.asarray(store.masks[models])
    correct = store.rows("correct_train", models)
    correct_test = store.rows("correct_test", models)
    quality = correct_test.mean(axis=1)
    # Each model's test accuracy on each class: (K, C), a covariate per model and example.
    y_test, y_train = np.asarray(store.y_test), np.asarray(store.y_train)
    classes = np.unique(y_test)
    by_class = np.stack([correct_test[:, y_test == c].mean(axis=1) for c in classes], axis=1)
    class_of = np.searchsorted(classes, y_train)
    if not np.array_equal(classes[np.minimum(class_of, len(classes) - 1)], y_train):
        raise SystemExit(f"{path}: a train label has no test example")
    pool = np.arange(ref_models, len(models))
    margins = store.rows("margin_train", models[pool])
    return run, models, masks, correct, quality, (by_class, class_of), pool, margins


def draws(rng, pool_size: int, k: int, repeats: int):
    """``repeats`` draws of k positions of the pool, disjoint until the pool runs out."""
    order, used = rng.permutation(pool_size), 0
    for _ in range(repeats):
        if used + k > pool_size:
            order, used = rng.permutation(pool_size), 0
        yield order[used : used + k]
        used += k


def models_needed(ks, rmse, target):
    """The K at which ``rmse`` (at ``ks``) first reaches ``target``, on log K; a string."""
    ks, rmse = np.asarray(ks, dtype=float), np.asarray(rmse)
    below = np.flatnonzero(rmse <= target)
    if len(below) == 0:
        return None, f"> {ks[-1]:.0f}"
    j = below[0]
    if j == 0:
        return ks[0], f"<= {ks[0]:.0f}"
    t = (rmse[j - 1] - target) / (rmse[j - 1] - rmse[j])
    k = float(np.exp(np.log(ks[j - 1]) + t * (np.log(ks[j]) - np.log(ks[j - 1]))))
    return k, f"{k:.0f}"


def mean_se(values: np.ndarray, k: int, pool: int) -> float:
    """Standard error of the mean of ``values`` (one per draw of k of ``pool`` models).

    Disjoint draws are independent. Once the pool is reused, the draws overlap: their
    spread is a draw's sd times ``sqrt(1 - k / pool)`` (sampling without replacement), and
    their mean is worth about ``pool / k`` independent draws.
    """
    n_draws = len(values)
    if n_draws < 2:
        return float("nan")
    sd = values.std(ddof=1)
    if k * n_draws <= pool:
        return float(sd / np.sqrt(n_draws))
    if k >= pool:
        return float("nan")
    return float(sd / np.sqrt(1.0 - k / pool) * np.sqrt(k / pool))


def ranked_deciles(values: np.ndarray, known: np.ndarray, rng) -> np.ndarray:
    """Decile 0..9 of each known value by rank, ties broken at random (many are exactly
    0); -1 where not known."""
    order = np.lexsort((rng.random(len(values)), np.where(known, values, np.inf)))
    decile = np.full(len(values), -1)
    count = int(known.sum())
    decile[order[:count]] = np.arange(count) * DECILES // count
    return decile


def decile_means(values: np.ndarray, decile: np.ndarray, use: np.ndarray) -> np.ndarray:
    counts = np.bincount(decile[use], minlength=DECILES)
    sums = np.bincount(decile[use], weights=values[use], minlength=DECILES)
    return sums / np.maximum(counts, 1)


def bench_run(path, ref_models, ks, repeats, ratio, bins, seed):
    run, models, masks, correct, quality, (by_class, class_of), pool, margins = load(
        path, ref_models, ratio
    )
    n = masks.shape[1]
    ref, ref_se = plain(masks[:ref_models], correct[:ref_models])
    var_ref = ref_se**2
    half = ref_models // 2
    ref_a, _ = plain(masks[:half], correct[:half])
    ref_b, ref_b_se = plain(masks[half:ref_models], correct[half:ref_models])
    rng = np.random.default_rng(seed)
    known = np.isfinite(ref) & np.isfinite(ref_a) & np.isfinite(ref_b)
    decile = ranked_deciles(ref, known, rng)  # for the bias against plain (paired)
    decile_a = ranked_deciles(ref_a, known, rng)  # for the error against half B
    top_b = decile_a == DECILES - 1
    noise_b = np.sqrt(np.mean(ref_b_se[top_b] ** 2) / np.count_nonzero(top_b))
    print(
        f"\n## {run.path}: {run.spec.dataset.name}, {run.n_finished} of {run.n_models} models "
        f"finished; ratio {ratio}: {len(models)} models = {ref_models} reference + "
        f"{len(pool)} pool; n = {n}; test accuracy of the models "
        f"{100 * quality.mean():.2f}% (sd {100 * quality.std():.2f})"
    )
    print(
        f"reference: plain on {ref_models} models, mean se {np.nanmean(ref_se):.4f}, "
        f"mean mem {np.nanmean(ref):.4f}; its deciles' means: "
        + " ".join(f"{np.mean(ref[decile == d]):.3f}" for d in range(DECILES))
    )
    print(
        f"half B alone adds {noise_b:.4f} of noise to the top decile's error; draws per K: "
        f"max({repeats}, pool // K), seed {seed}"
    )

    functions = estimators(bins)
    results = {name: {} for name in functions}
    for k in ks:
        if k >= len(pool):
            print(f"K = {k} skipped: the pool has {len(pool)} models")
            continue
        # At least one pass over the pool at every K: more disjoint draws at small K.
        n_draws = max(repeats, len(pool) // k)
        acc = {
            name: {"mse": [], "vref": [], "se2": [], "bias": [], "error_b": [], "seconds": 0.0}
            for name in functions
        }
        for draw in draws(rng, len(pool), k, n_draws):
            rows = pool[draw]
            m, c, g = masks[rows], correct[rows], margins[draw]
            class_quality = by_class[rows][:, class_of]
            out = {}
            for name, function in functions.items():
                start = time.perf_counter()
                out[name] = function(m, c, g, quality[rows], class_quality)
                acc[name]["seconds"] += time.perf_counter() - start
            use = known & np.logical_and.reduce([np.isfinite(e) for e, _ in out.values()])
            base = out["plain"][0]
            for name, (estimate, se) in out.items():
                a = acc[name]
                a["mse"].append(np.mean((estimate[use] - ref[use]) ** 2))
                a["vref"].append(np.mean(var_ref[use]))
                a["se2"].append(np.mean(se[use] ** 2))
                a["bias"].append(decile_means(estimate - base, decile, use))
                a["error_b"].append(decile_means(estimate - ref_b, decile_a, use))
        for name, a in acc.items():
            rmse = np.sqrt(max(np.mean(a["mse"]) - np.mean(a["vref"]), 0.0))
            bias, error_b = np.array(a["bias"]), np.array(a["error_b"])
            mean_bias, mean_error = bias.mean(axis=0), error_b.mean(axis=0)
            worst = int(np.argmax(np.abs(mean_bias)))
            worst_b = int(np.argmax(np.abs(mean_error)))
            results[name][k] = {
                "draws": n_draws,
                "rmse": rmse,
                "calibration": np.sqrt(np.mean(a["se2"])) / rmse if rmse > 0 else np.nan,
                "worst": float(abs(mean_bias[worst])),
                "worst_decile": worst + 1,
                "top": float(mean_bias[-1]),
                "top_se": mean_se(bias[:, -1], k, len(pool)),
                "worst_b": float(abs(mean_error[worst_b])),
                "worst_b_decile": worst_b + 1,
                "top_b": float(mean_error[-1]),
                "top_b_se": float(np.hypot(noise_b, mean_se(error_b[:, -1], k, len(pool)))),
                "ms": 1000 * a["seconds"] / n_draws,
            }

    done = [k for k in ks if k in results["plain"]]
    print(
        "\n| K | draws | estimator | RMSE | RMSE / plain | SE/RMSE | bias: worst abs (decile) "
        "| bias: top decile ± se | vs half B: worst abs (decile) | vs half B: top decile ± se "
        "| ms/call |\n|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for k in done:
        base = results["plain"][k]["rmse"]
        for name in functions:
            r = results[name][k]
            if name == "plain":
                bias = "0 (control) | 0 (control)"
            else:
                bias = (
                    f"{r['worst']:.4f} ({r['worst_decile']}) | {r['top']:+.4f} ± {r['top_se']:.4f}"
                )
            print(
                f"| {k} | {r['draws']} | {name} | {r['rmse']:.4f} | {r['rmse'] / base:.3f} | "
                f"{r['calibration']:.2f} | {bias} | {r['worst_b']:.4f} ({r['worst_b_decile']}) | "
                f"{r['top_b']:+.4f} ± {r['top_b_se']:.4f} | {r['ms']:.1f} |"
            )
    if not done:
        return
    k_max = done[-1]
    target = results["plain"][k_max]["rmse"]
    print(
        f"\nmodels needed to reach the plain RMSE at K = {k_max} ({target:.4f}); the rule: "
        f"|bias| <= {BIAS_LIMIT} in every decile at every K and at most K = {k_max / 2:.0f}\n"
        "\n| estimator | models needed | ratio to plain | worst abs bias over K | verdict |"
        "\n|---|---:|---:|---:|---|"
    )
    for name in functions:
        rmse = [results[name][k]["rmse"] for k in done]
        needed, text = models_needed(done, rmse, target)
        ratio_text = "-" if needed is None else f"{needed / k_max:.2f}"
        if text.startswith("<="):
            ratio_text = f"<= {needed / k_max:.2f}"
        worst = max(results[name][k]["worst"] for k in done)
        if name == "plain":
            verdict = "baseline"
        else:
            reasons = []
            if worst > BIAS_LIMIT:
                reasons.append("biased")
            if needed is None or needed > k_max / 2:
                reasons.append("not 2x fewer models")
            verdict = "may be default" if not reasons else "no: " + ", ".join(reasons)
        print(f"| {name} | {text} | {ratio_text} | {worst:.4f} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="trained run directories")
    parser.add_argument(
        "--ref-models",
        type=int,
        nargs="+",
        required=True,
        help="reference models: one number for every run, or one per run",
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[25, 50, 100, 200, 400])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--bins", type=int, default=10, help="out-rate bins of shrunk")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    refs = args.ref_models * len(args.runs) if len(args.ref_models) == 1 else args.ref_models
    if len(refs) != len(args.runs):
        parser.error("--ref-models takes one number or one per run")
    warnings.simplefilter("ignore", UndefinedEstimateWarning)
    for path, ref_models in zip(args.runs, refs, strict=True):
        start = time.perf_counter()
        bench_run(path, ref_models, sorted(args.ks), args.repeats, args.ratio, args.bins, args.seed)
        print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
