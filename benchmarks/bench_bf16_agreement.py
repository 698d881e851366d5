"""Does bf16 training change what is estimated? Three trainings of one subset plan on MNIST.

Trains the same K subset masks three times with the demo MLP (1 epoch by default):

- ``fp32``: fp32, per-model training seeds A;
- ``fp32'``: fp32, other training seeds B (what a new seed does to the estimates);
- ``bf16``: bf16 matrix products, seeds A.

bf16 rounding diverges training as a new seed does, so the measure of agreement is not
bf16 against the same-seed fp32 run but against ``fp32'``:

- mean test accuracy of bf16 within 0.3 points of fp32;
- Pearson(mem_bf16, mem_fp32') >= Pearson(mem_fp32, mem_fp32') - 0.03;
- mean over examples of mem_bf16 - mem_fp32 within 2 standard errors of 0, the SE from a
  paired jackknife over models (model k of both runs shares its mask and seed; leaving it
  out of both keeps the correlation across examples in the SE).

    python benchmarks/bench_bf16_agreement.py                  # K=256, 1 epoch, ~8 min
    python benchmarks/bench_bf16_agreement.py --models 64      # a quick look
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

import tailscope as ts
from tailscope.data import features
from tailscope.engine import train_models
from tailscope.estimate import memorization, memorization_counts
from tailscope.models import get_recipe


def jackknife_mean_difference(
    masks: np.ndarray, correct_a: np.ndarray, correct_b: np.ndarray
) -> tuple[float, float]:
    """Mean over examples of mem_a - mem_b and its paired leave-one-model-out jackknife SE."""
    k = len(masks)
    counts = [memorization_counts(masks, c) for c in (correct_a, correct_b)]
    hits = [(c[0], c[2]) for c in counts]  # hits_in, hits_out per run
    k_in, k_out = counts[0][1], counts[0][3]

    def mean_difference(drop: int | None) -> float:
        ki, ko = k_in.astype(float), k_out.astype(float)
        if drop is not None:
            ki, ko = ki - masks[drop], ko - ~masks[drop]
        means = []
        for (h_in, h_out), correct in zip(hits, (correct_a, correct_b), strict=True):
            h_in, h_out = h_in.astype(float), h_out.astype(float)
            if drop is not None:
                h_in = h_in - (correct[drop] & masks[drop])
                h_out = h_out - (correct[drop] & ~masks[drop])
            with np.errstate(divide="ignore", invalid="ignore"):
                means.append(h_in / ki - h_out / ko)
        diff = means[0] - means[1]
        return float(np.nanmean(diff))

    full = mean_difference(None)
    leave_one_out = np.array([mean_difference(j) for j in range(k)])
    se = float(np.sqrt((k - 1) / k * np.sum((leave_one_out - leave_one_out.mean()) ** 2)))
    return full, se


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=256, help="K, models per training")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--models-per-step", type=int, default=16)
    parser.add_argument("--mnist", default="mnist", help="MNIST as a name, .npz or idx folder")
    args = parser.parse_args()

    data = ts.datasets.load(args.mnist)
    x_train, x_test = features(data)
    plan = ts.SubsetPlan.random(args.models, data.n_train, ratio=0.7, random_state=0)
    other_seeds = ts.SubsetPlan.random(args.models, 2, ratio=0.5, random_state=1).seeds
    recipe = get_recipe("mlp", epochs=args.epochs)
    masks = np.asarray(plan.masks)
    trainings = {
        "fp32": ("fp32", plan.seeds),
        "fp32'": ("fp32", other_seeds),
        "bf16": ("bf16", plan.seeds),
    }
    outputs = {}
    for name, (precision, seeds) in trainings.items():
        start = time.perf_counter()
        outputs[name] = train_models(
            recipe,
            x_train,
            data.y_train,
            x_test,
            data.y_test,
            masks,
            seeds,
            precision=precision,
            max_stacked=args.models_per_step,
        )
        print(f"{name:6s} trained {args.models} models in {time.perf_counter() - start:.0f} s")

    mem = {name: memorization(masks, out.correct_train).value for name, out in outputs.items()}
    accuracy = {name: 100 * out.correct_test.mean() for name, out in outputs.items()}
    both = ~np.isnan(mem["fp32"]) & ~np.isnan(mem["fp32'"]) & ~np.isnan(mem["bf16"])
    r_seed = stats.pearsonr(mem["fp32"][both], mem["fp32'"][both])[0]
    r_bf16 = stats.pearsonr(mem["bf16"][both], mem["fp32'"][both])[0]
    diff, se = jackknife_mean_difference(
        masks, outputs["bf16"].correct_train, outputs["fp32"].correct_train
    )
    print(f"\nMNIST, demo MLP, {args.epochs} epoch(s), K={args.models}, one subset plan")
    print(
        "mean test accuracy: "
        + ", ".join(f"{name} {acc:.2f}%" for name, acc in accuracy.items())
        + f"; bf16 - fp32 = {accuracy['bf16'] - accuracy['fp32']:+.2f} points (goal: within 0.3)"
    )
    print(
        f"Pearson(mem_fp32, mem_fp32') = {r_seed:.4f}; Pearson(mem_bf16, mem_fp32') = "
        f"{r_bf16:.4f} (goal: >= {r_seed - 0.03:.4f})"
    )
    print(
        f"mean(mem_bf16 - mem_fp32) = {diff:+.5f}, paired jackknife SE {se:.5f}: "
        f"{diff / se:+.2f} SE (goal: within 2 SE of 0)"
    )


if __name__ == "__main__":
    main()
