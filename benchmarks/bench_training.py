"""Training throughput: the plain per-model loop against tailscope's engine, in one process.

For each workload (the public demo's MLP on MNIST, 1 epoch; a tiny MLP on scikit-learn's
digits; the built-in ``cnn`` recipe on a 6,000-example MNIST subset) and on the same data,
masks and seeds, it times:

- ``plain``: the loop the public demo runs, one model after another: one ``nn.Module``, one
  ``torch.optim.SGD``, a DataLoader-free minibatch loop over the model's subset, then
  predictions on all n + t examples (batches of 1024, no autograd);
- ``engine fp32`` / ``engine bf16``: ``tailscope.engine.train_models`` as a run calls it
  (MLPs: the stacked-MLP path; the CNN on a CPU: one model at a time, channels-last);
- ``engine vmap``: the generic ``vmap`` path, for reference (``--vmap``; always on digits
  and on the CNN).

and prints models/min, GFLOP/s (6 x params per trained example + 2 x params per evaluated
example; dense layers only, so not for the CNN), the fraction of this machine's matmul peak
measured in the same run (fp32 ``torch.mm``; bf16 for the bf16 row), the speed-up over the
plain loop and the mean test accuracy. For MNIST it also projects the public demo's full
workload (2000 models x 10 epochs) from the measured training and evaluation times.

    python benchmarks/bench_training.py                 # all three workloads
    python benchmarks/bench_training.py --threads 1 --only mnist --models 16 --plain-models 8
    python benchmarks/bench_training.py --device cuda   # on a GPU
    python benchmarks/bench_training.py --end-to-end    # a whole run in a fresh process
    python benchmarks/bench_training.py --profile       # where a stacked-MLP step's time goes

``--end-to-end`` times what a user waits for: a fresh ``python`` process that imports
tailscope, loads MNIST, creates a run (K=48 demo MLPs, 1 epoch, three full chunks of 16) and
trains it, per precision, against the plain loop on the same data in this process; median of
3 interleaved repeats. ``--profile`` runs one chunk of 16 MNIST MLPs (20,000 examples, 1
epoch, then predictions) under ``torch.profiler`` per precision and splits a training step
into matrix products, casts, the master-weight and momentum update, data movement and the
rest, plus the time of the predictions.

Run it by hand on a quiet machine: other processes on the same cores distort every number
(ratios measured in the same run hold up better than absolute rates).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import tailscope as ts
from tailscope.data import features
from tailscope.engine import train_models
from tailscope.engine.schedule import init_model, member_orders
from tailscope.models import Recipe, get_recipe, mlp

#: ``train_models`` options that force the generic vmap path.
VMAP = {"vectorize": True, "stacked_mlp": False}
DEMO_EPOCHS_FULL = 10
DEMO_MODELS_FULL = 2000
EVAL_BATCH = 1024


@dataclasses.dataclass
class Timing:
    """One trainer on one workload: ``models`` models in ``seconds`` (``train_seconds`` of
    them training), and their mean test accuracy."""

    trainer: str
    precision: str
    models: int
    seconds: float
    train_seconds: float
    accuracy: float


@dataclasses.dataclass
class Workload:
    name: str
    recipe: Recipe
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    masks: np.ndarray
    seeds: np.ndarray

    @property
    def n_params(self) -> int:
        model = init_model(self.recipe, self.x_train.shape[1:], 10, 0)
        return sum(p.numel() for p in model.parameters())

    def flops_per_model(self) -> float:
        """6 x params per trained example, 2 x params per evaluated example (the usual
        count, used for GFLOP/s and the fraction of peak)."""
        m = int(self.masks[0].sum())
        evaluated = len(self.y_train) + len(self.y_test)
        return self.n_params * (6.0 * m * self.recipe.epochs + 2.0 * evaluated)

    def multiplied_flops_per_model(self) -> float:
        """The products a trainer cannot skip: the usual count less the first layer's input
        gradient (2 x its weights per trained example), which nobody needs."""
        model = init_model(self.recipe, self.x_train.shape[1:], 10, 0)
        first = next(p for p in model.parameters() if p.dim() > 1).numel()
        m = int(self.masks[0].sum())
        return self.flops_per_model() - 2.0 * first * m * self.recipe.epochs


def make_workload(name: str, recipe: Recipe, dataset: ts.data.Dataset, n_models: int) -> Workload:
    x_train, x_test = features(dataset)
    plan = ts.SubsetPlan.random(max(n_models, 2), dataset.n_train, ratio=0.7, random_state=0)
    return Workload(
        name,
        recipe,
        x_train,
        dataset.y_train,
        x_test,
        dataset.y_test,
        np.asarray(plan.masks),
        np.asarray(plan.seeds),
    )


# ---- the matmul peak ---------------------------------------------------------------------


def matmul_peak(dtype: torch.dtype, device: torch.device, seconds: float = 3.0) -> float:
    """Best GFLOP/s of ``torch.mm`` over a few shapes: wide, minibatch-like, square."""
    shapes = [(1024, 784, 8192), (2048, 784, 512), (2048, 2048, 2048)]
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        out = torch.empty(m, n, dtype=dtype, device=device)
        torch.mm(a, b, out=out)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(shapes):
            torch.mm(a, b, out=out)
            reps += 1
        _sync(device)
        best = max(best, 2.0 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---- the trainers ------------------------------------------------------------------------


def plain_loop(work: Workload, n_models: int, device: torch.device) -> Timing:
    """The public demo's loop: one model, one optimizer, minibatches, then predictions."""
    recipe = work.recipe
    x_train = torch.as_tensor(work.x_train, device=device)
    y_train = torch.as_tensor(work.y_train, device=device)
    x_all = torch.cat([x_train, torch.as_tensor(work.x_test, device=device)])
    y_all = torch.cat([y_train, torch.as_tensor(work.y_test, device=device)])
    n = len(y_train)
    train_seconds, test_correct = 0.0, []
    start = time.perf_counter()
    for j in range(n_models):
        model = init_model(recipe, x_train.shape[1:], 10, int(work.seeds[j])).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
        orders = member_orders(work.masks[j : j + 1], work.seeds[j : j + 1])
        begin = time.perf_counter()
        model.train()
        for _ in range(recipe.epochs):
            order = torch.from_numpy(next(orders)[0]).to(device)
            for first in range(0, len(order), recipe.batch_size):
                idx = order[first : first + recipe.batch_size]
                optimizer.zero_grad()
                F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
                optimizer.step()
        _sync(device)
        train_seconds += time.perf_counter() - begin
        model.eval()
        with torch.no_grad():
            correct = torch.cat(
                [
                    model(x_all[i : i + EVAL_BATCH]).argmax(1) == y_all[i : i + EVAL_BATCH]
                    for i in range(0, len(y_all), EVAL_BATCH)
                ]
            )
        test_correct.append(correct[n:].float().mean().item())
    seconds = time.perf_counter() - start
    return Timing(
        "plain loop", "fp32", n_models, seconds, train_seconds, float(np.mean(test_correct))
    )


def engine(
    work: Workload, n_models: int, device: torch.device, precision: str, **options: object
) -> Timing:
    """tailscope's ``train_models`` on the first ``n_models`` masks."""
    last_step = [0.0]

    def progress(_steps: int) -> None:
        last_step[0] = time.perf_counter()

    start = time.perf_counter()
    out = train_models(
        work.recipe,
        work.x_train,
        work.y_train,
        work.x_test,
        work.y_test,
        work.masks[:n_models],
        work.seeds[:n_models],
        device=device,
        precision=precision,
        progress=progress,
        **options,
    )
    _sync(device)
    seconds = time.perf_counter() - start
    name = "engine vmap" if options == VMAP else "engine"
    accuracy = float(out.correct_test.mean())
    return Timing(name, precision, n_models, seconds, last_step[0] - start, accuracy)


# ---- the report --------------------------------------------------------------------------


def report(work: Workload, timings: list[Timing], peaks: dict[str, float]) -> None:
    plain = next(t for t in timings if t.trainer == "plain loop")
    plain_rate = plain.models / plain.seconds
    dense = all(isinstance(m, torch.nn.Linear) for m in _layers_with_weights(work))
    flops = work.flops_per_model() if dense else float("nan")  # 6 x params: dense layers only
    print(
        f"\n{work.name}: recipe {work.recipe.to_spec()}, {work.n_params:,} parameters, "
        f"n={len(work.y_train)}, t={len(work.y_test)}, m={int(work.masks[0].sum())}"
    )
    header = (
        f"{'trainer':<14}{'precision':<10}{'models':>7}{'models/min':>12}{'GFLOP/s':>10}"
        f"{'of peak':>9}{'x plain':>9}{'test acc':>10}{'train s':>9}{'eval s':>8}"
    )
    print(header)
    print("-" * len(header))
    for t in timings:
        rate = t.models / t.seconds
        gflops = flops * t.models / t.seconds / 1e9
        print(
            f"{t.trainer:<14}{t.precision:<10}{t.models:>7}{60 * rate:>12.1f}"
            f"{_number(gflops, 10, 1)}{_number(gflops / peaks[t.precision], 9, 2)}"
            f"{rate / plain_rate:>9.2f}{t.accuracy:>10.4f}"
            f"{t.train_seconds:>9.1f}{t.seconds - t.train_seconds:>8.1f}"
        )


def _layers_with_weights(work: Workload) -> list[torch.nn.Module]:
    model = init_model(work.recipe, work.x_train.shape[1:], 10, 0)
    return [m for m in model.modules() if getattr(m, "weight", None) is not None]


def _number(value: float, width: int, digits: int) -> str:
    """``value`` right-aligned, or "-" where it is not defined (NaN)."""
    return f"{'-':>{width}}" if np.isnan(value) else f"{value:>{width}.{digits}f}"


def project_demo(work: Workload, timings: list[Timing], peaks: dict[str, float]) -> None:
    """Wall time of 2000 models x 10 epochs, from measured 1-epoch training and evaluation,
    and the floor set by the matmul peak (every product that must be computed, at the peak
    rate)."""
    print(f"\nprojection: the public demo's {DEMO_MODELS_FULL} models x {DEMO_EPOCHS_FULL} epochs")
    epochs = work.recipe.epochs
    for t in timings:
        train_per_epoch = t.train_seconds / t.models / epochs
        evaluation = (t.seconds - t.train_seconds) / t.models
        hours = DEMO_MODELS_FULL * (DEMO_EPOCHS_FULL * train_per_epoch + evaluation) / 3600
        print(f"  {t.trainer:<14}{t.precision:<6} {hours:6.2f} h")
    full = dataclasses.replace(
        work, recipe=dataclasses.replace(work.recipe, epochs=DEMO_EPOCHS_FULL)
    )
    for precision in sorted({t.precision for t in timings}):
        flops = DEMO_MODELS_FULL * full.multiplied_flops_per_model()
        floor = flops / (peaks[precision] * 1e9) / 3600
        note = f"every needed product at the measured {precision} matmul peak"
        print(f"  {'at the peak':<14}{precision:<6} {floor:6.2f} h  ({note})")


def warm_up(device: torch.device, precisions: list[str]) -> None:
    """Run every trainer once on a few digits, so that one-time start-up costs (thread
    pools, kernel selection) do not land in the first timing."""
    digits = ts.datasets.load("digits", n_train=200, n_test=50)
    recipe = Recipe(
        name="warm-up", build=partial(mlp, hidden=(8,)), epochs=1, batch_size=32, lr=0.1
    )
    work = make_workload("warm-up", recipe, digits, 2)
    plain_loop(work, 2, device)
    for precision in precisions:
        engine(work, 2, device, precision)
    engine(work, 2, device, "fp32", **VMAP)


def run_workload(
    work: Workload,
    args: argparse.Namespace,
    peaks: dict[str, float],
    device: torch.device,
    vmap: bool,
    project: bool,
) -> None:
    """Time every trainer ``args.repeats`` times, interleaved, and report the fastest run of
    each (on a shared machine the fastest run is the one least disturbed)."""
    trainers: list[tuple[str, Callable[[], Timing]]] = [
        (
            f"plain loop ({args.plain_models} models)",
            partial(plain_loop, work, args.plain_models, device),
        )
    ]
    for precision in args.precisions:
        run = partial(engine, work, args.models, device, precision)
        trainers.append((f"engine {precision} ({args.models} models)", run))
    if vmap:
        run = partial(engine, work, args.models, device, "fp32", **VMAP)
        trainers.append((f"engine vmap fp32 ({args.models} models)", run))
    best: dict[str, Timing] = {}
    for repeat in range(args.repeats):
        for name, run in trainers:
            print(f"[{work.name}] {name}, run {repeat + 1}/{args.repeats} ...", flush=True)
            timing = run()
            if name not in best or timing.seconds < best[name].seconds:
                best[name] = timing
    timings = list(best.values())
    report(work, timings, peaks)
    if project:
        project_demo(work, timings, peaks)


# ---- end to end: a whole run in a fresh process ------------------------------------------

#: What ``--end-to-end`` runs in a fresh process (timed from the process's start to its exit).
END_TO_END_SCRIPT = """
import sys
import tailscope as ts
path, dataset, n_models, per_step, precision = sys.argv[1:6]
run = ts.Run.create(path, dataset, "mlp", n_models=int(n_models), epochs=1,
                    models_per_step=int(per_step), precision=precision)
run.train(progress=False)
assert run.n_finished == int(n_models)
"""


def end_to_end_run(dataset: str, n_models: int, per_step: int, precision: str) -> float:
    """Seconds of a fresh process that creates and trains a run of ``n_models`` demo MLPs."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as folder:
        command = [
            sys.executable,
            "-c",
            END_TO_END_SCRIPT,
            str(Path(folder, "run")),
            dataset,
            str(n_models),
            str(per_step),
            precision,
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        return time.perf_counter() - start


def end_to_end(args: argparse.Namespace, device: torch.device) -> None:
    """Engine runs end to end (fresh process, data loading and store included) against the
    plain loop in this process, median of ``args.repeats`` interleaved repeats."""
    if device.type != "cpu":
        raise SystemExit("--end-to-end measures the CPU path")
    mnist = ts.datasets.load(args.mnist)
    work = make_workload("MNIST demo MLP, 1 epoch", get_recipe("mlp", epochs=1), mnist, 16)
    n_models, per_step = args.e2e_models, args.models
    times: dict[str, list[float]] = defaultdict(list)
    for repeat in range(args.repeats):
        print(f"[end to end] repeat {repeat + 1}/{args.repeats} ...", flush=True)
        plain = plain_loop(work, args.plain_models, device)
        times["plain loop"].append(plain.seconds / plain.models)
        for precision in args.precisions:
            seconds = end_to_end_run(args.mnist, n_models, per_step, precision)
            times[f"engine {precision}"].append(seconds / n_models)
    plain_rate = 1 / statistics.median(times["plain loop"])
    print(
        f"\nend to end: {n_models} models in chunks of {per_step} (a fresh process: start, "
        f"import, MNIST, store, training); plain loop: {args.plain_models} models in this "
        f"process; median of {args.repeats} repeats"
    )
    print(f"{'trainer':<14}{'models/min':>12}{'x plain':>9}{'s per run':>11}  all repeats (s/run)")
    for name, per_model in times.items():
        rate = 1 / statistics.median(per_model)
        runs = n_models if name != "plain loop" else args.plain_models
        each = ", ".join(f"{runs * t:.1f}" for t in per_model)
        print(f"{name:<14}{60 * rate:>12.1f}{rate / plain_rate:>9.2f}{runs / rate:>11.1f}  {each}")


# ---- profile: where a training step's time goes -------------------------------------------

#: aten ops that are matrix products.
PRODUCTS = {
    "aten::bmm",
    "aten::baddbmm",
    "aten::baddbmm_",
    "aten::mm",
    "aten::addmm",
    "aten::matmul",
}
#: aten ops that only convert dtypes.
CASTS = {"aten::copy_", "aten::_to_copy"}
#: The engine's ``record_function`` scopes (see ``train_stacked_mlp``).
SCOPES = ("tailscope.gather", "tailscope.forward_backward", "tailscope.update", "tailscope.predict")


def _category(event) -> str:
    """What one aten op of a profiled chunk was doing."""
    scope = event.cpu_parent
    while scope is not None and not scope.name.startswith("tailscope."):
        scope = scope.cpu_parent
    where = scope.name if scope is not None else ""
    if where == "tailscope.predict":
        return "predictions"
    if where == "tailscope.update":
        return "master-weight update + bf16 copy" if event.name in CASTS else "master-weight update"
    if where == "tailscope.gather":
        return "data movement"
    if event.name in PRODUCTS:
        return "matrix products"
    if event.name in CASTS:
        return "casts"
    return "other element-wise" if where else "set-up"


def profile_step(args: argparse.Namespace, device: torch.device) -> None:
    """Per precision: a profiled chunk of 16 MNIST MLPs, its self time by category."""
    from torch.profiler import ProfilerActivity, profile

    data = ts.datasets.load(args.mnist, n_train=20_000, n_test=1_000, random_state=0)
    work = make_workload("MNIST 20k, demo MLP, 1 epoch", get_recipe("mlp", epochs=1), data, 16)
    steps = int(np.ceil(int(work.masks[0].sum()) / work.recipe.batch_size))
    rows = {}
    for precision in args.precisions:
        engine(work, 2, device, precision)  # warm up this precision's kernels
        wall = engine(work, 16, device, precision).seconds
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            engine(work, 16, device, precision)
        seconds: dict[str, float] = defaultdict(float)
        for event in prof.events():
            if event.name.startswith("aten::"):
                seconds[_category(event)] += event.self_cpu_time_total / 1e6
        rows[precision] = (wall, seconds)
    categories = [
        "matrix products",
        "casts",
        "master-weight update",
        "master-weight update + bf16 copy",
        "data movement",
        "other element-wise",
    ]
    print(
        f"\nprofile: one chunk of 16 MLPs, {steps} steps of batch {work.recipe.batch_size}, then "
        f"predictions on {len(work.y_train) + len(work.y_test):,} examples; self CPU time "
        "(summed over threads' ops as torch.profiler sees them; unprofiled wall beside)"
    )
    header = f"{'':<34}" + "".join(f"{p:>22}" for p in rows)
    print(header)
    print("-" * len(header))
    print(f"{'unprofiled wall (s)':<34}" + "".join(f"{w:>22.2f}" for w, _ in rows.values()))
    for name in ["per training step (ms)", *categories]:
        cells = []
        for _, seconds in rows.values():
            step_total = sum(seconds[c] for c in categories)
            if name.startswith("per training step"):
                cells.append(f"{1e3 * step_total / steps:>22.2f}")
            else:
                share = seconds[name] / step_total if step_total else float("nan")
                cells.append(f"{1e3 * seconds[name] / steps:>12.2f} ms {share:>6.0%}")
        print(f"{name:<34}" + "".join(cells))
    print(
        f"{'predictions (s, whole chunk)':<34}"
        + "".join(f"{s['predictions']:>22.2f}" for _, s in rows.values())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=16, help="models per engine run")
    parser.add_argument("--plain-models", type=int, default=8, help="models of the plain loop")
    parser.add_argument("--digits-models", type=int, default=64, help="engine models, digits")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=1, help="runs per trainer; best kept")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=["mnist", "digits", "cnn"], default=None)
    parser.add_argument("--cnn-models", type=int, default=8, help="engine models, cnn")
    parser.add_argument(
        "--mnist", default="mnist", help="MNIST as a built-in name, an .npz or an idx folder"
    )
    parser.add_argument("--vmap", action="store_true", help="also time the vmap path on MNIST")
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="time whole runs in fresh processes against the plain loop (median of --repeats, "
        "at least 3)",
    )
    parser.add_argument("--e2e-models", type=int, default=48, help="models per end-to-end run")
    parser.add_argument(
        "--profile", action="store_true", help="split a stacked-MLP step's time by category"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(cpu_description())
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    peaks = {
        "fp32": matmul_peak(torch.float32, device),
        "bf16": matmul_peak(torch.bfloat16, device),
    }
    warm_up(device, args.precisions)
    print(f"matmul peak: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s")
    print(_load_average())
    if args.end_to_end or args.profile:
        if args.end_to_end:
            args.repeats = max(args.repeats, 3)
            end_to_end(args, device)
        if args.profile:
            profile_step(args, device)
        print(_load_average())
        return

    if args.only in (None, "mnist"):
        mnist = ts.datasets.load(args.mnist)
        work = make_workload(
            "MNIST, demo MLP 784-512-256-10, 1 epoch",
            get_recipe("mlp", epochs=1),
            mnist,
            args.models,
        )
        run_workload(work, args, peaks, device, vmap=args.vmap, project=True)
    if args.only in (None, "digits"):
        digits = ts.datasets.load("digits")
        tiny = Recipe(
            name="tiny-mlp",
            build=partial(mlp, hidden=(32,)),
            epochs=10,
            batch_size=32,
            lr=0.1,
            momentum=0.9,
        )
        work = make_workload("digits, MLP 64-32-10, 10 epochs", tiny, digits, args.digits_models)
        digits_args = argparse.Namespace(**{**vars(args), "models": args.digits_models})
        run_workload(work, digits_args, peaks, device, vmap=True, project=False)
    if args.only in (None, "cnn"):
        subset = ts.datasets.load(args.mnist, n_train=6000, n_test=1000, random_state=0)
        work = make_workload(
            "MNIST 6000/1000, cnn recipe, 1 epoch", get_recipe("cnn", epochs=1), subset, 8
        )
        cnn_args = argparse.Namespace(
            **{**vars(args), "models": args.cnn_models, "plain_models": 4, "precisions": ["fp32"]}
        )
        run_workload(work, cnn_args, peaks, device, vmap=True, project=False)
    print(_load_average())


#: CPU flags that decide which kernels run (fp32 vs native bf16 products).
FLAGS_THAT_MATTER = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description() -> str:
    """The CPU's model name and the flags that matter here, from /proc/cpuinfo (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"cpu: {platform.processor() or platform.machine()}"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line and line.strip())
    model = fields.get("model name\t", fields.get("model name", "?")).strip()
    flags = set(fields.get("flags\t\t", fields.get("flags", "")).split())
    present = [f for f in FLAGS_THAT_MATTER if f in flags]
    native = ts.engine.precision.bf16_is_native("cpu")
    return (
        f"cpu: {model}, {os.cpu_count()} logical CPUs; flags: {' '.join(present) or 'none'}; "
        f"native bf16: {'yes' if native else 'no'}"
    )


def _load_average() -> str:
    """The 1-minute load average: above ~0.5 on 2 cores, other work disturbs the timings."""
    return f"load average (1 min): {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""


if __name__ == "__main__":
    main()
