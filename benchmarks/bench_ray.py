"""Ray's overhead on one machine: the same run trained locally and on a loopback Ray cluster.

It starts a Ray head on 127.0.0.1 (``LoopbackHead`` of ``tests/ray_head.py``, which
stops only what it started), then trains the same run spec (same masks, seeds, chunks)
``--repeat`` times each way and prints the minimum wall time of each:

- ``local``: ``run.train()`` in this process, with ``--num-cpus`` torch threads;
- ``ray N x 1 thread``: ``run.train(executor="ray", address=...)``, one CPU and one torch
  thread per task, as many tasks at once as the head has CPUs;
- ``ray 1 x N threads``: ``num_cpus_per_task`` = the head's CPUs, one task at a time, the
  same threads as local (what Ray alone costs).

A Ray time is what a user waits for ``run.train``: connecting, putting the job in the object
store, starting worker processes (each imports torch), training, returning rows, and
disconnecting. Every Ray run is checked to equal the local one, bit for bit.

    python benchmarks/bench_ray.py                      # MNIST MLP, 64 models, 1 epoch
    python benchmarks/bench_ray.py --dataset digits --models 64 --epochs 20
    python benchmarks/bench_ray.py --num-cpus 1 --models 32   # one core: steadier on a busy box

The machine may be shared: run it more than once, and compare minima.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import tailscope as ts
from tailscope.engine import ModelOutputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ray_head import LOOPBACK_ENV, LoopbackHead

# Both the head and this driver; set before Ray is first imported (it reads them then;
# tailscope imports it only when a Ray executor is made).
os.environ.update(LOOPBACK_ENV)


def _train(root: Path, name: str, data, args, **train_options) -> tuple[float, ts.Run]:
    run = ts.Run.create(
        root / name,
        data,
        "mlp",
        n_models=args.models,
        epochs=args.epochs,
        seed=0,
        models_per_step=args.models_per_step,
    )
    start = time.perf_counter()
    run.train(progress=False, **train_options)
    return time.perf_counter() - start, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", help="mnist (default), digits, ...")
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--models-per-step", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--num-cpus", type=int, default=os.cpu_count() or 2, help="head CPUs = local threads"
    )
    args = parser.parse_args()

    data = ts.datasets.load(args.dataset)
    cpus = args.num_cpus
    print(
        f"{args.dataset}: n={data.n_train}, t={data.n_test}; mlp, {args.models} models, "
        f"{args.epochs} epoch(s), {args.models_per_step} per chunk; {cpus} CPUs; "
        f"torch {torch.__version__}"
    )
    torch.set_num_threads(cpus)  # local uses the CPUs the head offers, no more
    configs = {
        "local": {},
        f"ray {cpus} x 1 thread": {"num_cpus_per_task": 1},
        f"ray 1 x {cpus} threads": {"num_cpus_per_task": cpus},
    }
    if cpus == 1:
        del configs["ray 1 x 1 threads"]
    times: dict[str, list[float]] = {name: [] for name in configs}
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        with LoopbackHead(cpus) as head:
            for r in range(args.repeat):
                reference = None
                for i, (name, options) in enumerate(configs.items()):
                    if options:
                        options = {"executor": "ray", "address": head.address, **options}
                    seconds, run = _train(root, f"run-{r}-{i}", data, args, **options)
                    times[name].append(seconds)
                    print(f"  repeat {r + 1}: {name:<22} {seconds:7.1f} s", flush=True)
                    if reference is None:
                        reference = run
                    else:
                        for out in ModelOutputs.ROWS:
                            if not np.array_equal(run.store.rows(out), reference.store.rows(out)):
                                sys.exit(f"{name}: {out} differs from the local run")
                shutil.rmtree(root)
                root.mkdir()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    local = min(times["local"])
    print(f"\nminimum of {args.repeat} runs; every Ray run equal to the local one bit for bit")
    print(f"{'executor':<22} {'wall s':>8} {'models/min':>11} {'overhead':>9}")
    for name, seconds in times.items():
        best = min(seconds)
        overhead = "" if name == "local" else f"{100 * (best / local - 1):+.0f}%"
        print(f"{name:<22} {best:8.1f} {60 * args.models / best:11.1f} {overhead:>9}")


if __name__ == "__main__":
    main()
