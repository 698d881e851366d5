"""The command line: happy path, and one clear line (no traceback) for every bad input."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import tailscope as ts
from tailscope import cli
from tailscope.cli import main
from tailscope.engine import default_models_per_step, precision
from tailscope.errors import DataError
from tailscope.experiments import InfluencerRemoval, MarginalUtility, interval

TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--n-train",
    "200",
    "--n-test",
    "60",
    "--models",
    "4",
    "--epochs",
    "1",
    "--models-per-step",
    "2",
    "--quiet",
]


def _one_line_error(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("tailscope")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "run"
    assert main([TRAIN[0], str(path), *TRAIN[1:]]) == 0
    return path


def test_train_then_estimate_writes_tables(trained_run, capsys):
    assert main(["estimate", str(trained_run), "--infl", "0.2", "--mem", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "4 models" in out and "memorization" in out
    assert "findings at FDR 0.1" in out and "needs" in out
    mem = pd.read_csv(trained_run / "memorization.csv")
    assert list(mem.columns) == [
        "index",
        "label",
        "mem",
        "mem_se",
        "mem_low",
        "mem_high",
        "mem_p",
        "mem_q",
    ]
    assert len(mem) == 200
    pairs = pd.read_csv(trained_run / "pairs.csv")
    assert list(pairs.columns) == [
        "train_index",
        "test_index",
        "train_pos",
        "test_pos",
        "label",
        "infl",
        "infl_se",
        "infl_low",
        "infl_high",
        "p",
        "q",
        "mem",
        "mem_se",
        "mem_q",
    ]
    assert (pairs["q"] <= 0.1).all() and (pairs["mem_q"] <= 0.1).all()
    # The paper's plain rule: every pair above the thresholds, p-values but no q-values.
    assert (
        main(["estimate", str(trained_run), "--infl", "0.2", "--mem", "0.1", "--fdr", "none"]) == 0
    )
    assert "plain threshold rule" in capsys.readouterr().out
    pairs = pd.read_csv(trained_run / "pairs.csv")
    assert len(pairs) > 0 and pairs["q"].isna().all()
    assert (pairs["infl"] >= 0.2).all() and (pairs["mem"] >= 0.1).all()


def test_train_resume_without_dataset(trained_run, capsys):
    assert main(["train", str(trained_run), "--quiet"]) == 0
    assert "4/4 models finished (0 trained" in capsys.readouterr().out


def test_unknown_dataset(tmp_path, capsys):
    _one_line_error(capsys, ["train", str(tmp_path / "r"), "--dataset", "cifar-1000"], "cifar-1000")


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.2", "abc"])
def test_bad_ratio(tmp_path, capsys, ratio):
    _one_line_error(
        capsys, ["train", str(tmp_path / "r"), "--dataset", "digits", "--ratio", ratio], "ratio"
    )


@pytest.mark.parametrize("k", ["1", "0", "x"])
def test_too_few_models(tmp_path, capsys, k):
    _one_line_error(
        capsys, ["train", str(tmp_path / "r"), "--dataset", "digits", "--models", k], "--models"
    )


@pytest.mark.parametrize("device", ["cuda:99", "gpu"])
def test_unusable_device_fails_before_creating_the_run(tmp_path, capsys, device):
    # cuda:99: no such GPU here (a CPU-only torch has none at all); gpu: not a torch device.
    args = ["train", str(tmp_path / "r"), "--dataset", "digits", "--device", device]
    _one_line_error(capsys, args, "--device", device)
    assert not (tmp_path / "r" / "spec.json").exists()


def test_missing_run(tmp_path, capsys):
    _one_line_error(capsys, ["estimate", str(tmp_path / "none")], "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["estimate", str(tmp_path / "empty")], "no spec.json")
    _one_line_error(capsys, ["train", str(tmp_path / "empty")], "--dataset")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("masks.npy", "masks.npy"),
        ("spec.json", "spec.json"),
        ("correct_test.npy", "correct_test.npy"),
    ],
)
def test_corrupt_run_files(tmp_path, capsys, trained_run, name, needle):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    (copy / name).write_bytes(b"\x93NUMPY garbage")
    _one_line_error(capsys, ["estimate", str(copy)], needle, "corrupt")


def test_spec_mismatch_keeps_what_was_trained(trained_run, capsys):
    before = np.load(trained_run / "correct_test.npy").copy()
    _one_line_error(
        capsys,
        [TRAIN[0], str(trained_run), *TRAIN[1:], "--seed", "3"],
        "seed: stored 0, given 3",
    )
    assert np.array_equal(np.load(trained_run / "correct_test.npy"), before)
    assert ts.Run.open(trained_run, writable=False).n_finished == 4


def test_resume_with_a_conflicting_option_names_both_values(trained_run, capsys):
    for option, value, stored in (
        ("--epochs", "5", "epochs: stored 1, given 5"),
        ("--models", "8", "n_models: stored 4, given 8"),
        ("--model", "cnn", "model: stored 'mlp', given 'cnn'"),
        ("--ratio", "0.5", "ratio: stored (0.7,), given (0.5,)"),
    ):
        _one_line_error(capsys, ["train", str(trained_run), option, value], stored)
    # Options that may differ between sessions apply; the same settings are no conflict.
    argv = ["train", str(trained_run), "--models", "4", "--max-models", "4", "--quiet"]
    assert main([*argv, "--device", "cpu", "--precision", "auto"]) == 0


def test_status_says_where_a_run_stands(trained_run, capsys):
    assert main(["status", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert "models 4/4 finished" in out and "precision fp32" in out
    assert "last training stopped: all_models" in out and "results:" in out


def _npz(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(40, 5)),
        "y_train": np.arange(40) % 3,
        "x_test": rng.normal(size=(10, 5)),
        "y_test": np.arange(10) % 3,
    }
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def test_nan_features(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(40, 5))
    x[3, 1] = np.nan
    bad = _npz(tmp_path / "nan.npz", x_train=x)
    _one_line_error(capsys, ["train", str(tmp_path / "r"), "--dataset", str(bad)], "NaN")


def test_labels_out_of_range(tmp_path, capsys):
    bad = _npz(tmp_path / "labels.npz", y_train=np.arange(40) % 3 - 1)
    _one_line_error(capsys, ["train", str(tmp_path / "r"), "--dataset", str(bad)], "label")


def test_run_dir_is_a_file(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("not a run")
    _one_line_error(capsys, ["train", str(file), "--dataset", "digits"], "not a directory")
    _one_line_error(capsys, ["estimate", str(file)], "not a directory")


def test_python_m_tailscope_prints_no_traceback(tmp_path):
    def run(*args):
        command = [sys.executable, "-m", "tailscope", *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    proc = run("train", str(tmp_path / "r"), "--dataset", "nope")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"tailscope {ts.__version__}"


def test_train_until_se(tmp_path, capsys):
    path = tmp_path / "r"
    argv = [
        "train",
        str(path),
        "--dataset",
        "digits",
        "--n-train",
        "200",
        "--n-test",
        "60",
        "--models",
        "64",
        "--epochs",
        "1",
        "--models-per-step",
        "4",
        "--quiet",
        "--until-se",
        "0.3",
        "--quantile",
        "0.5",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "stopped: SE target reached" in out
    assert 0 < ts.Run.open(path, writable=False).n_finished < 64


def test_resuming_keeps_the_runs_precision_and_refuses_another(tmp_path, capsys, monkeypatch):
    path = tmp_path / "r"
    create = ["train", str(path), "--dataset", "digits", "--n-train", "100", "--n-test", "40"]
    monkeypatch.setattr(precision, "bf16_is_native", lambda device="cpu": True)
    small = ["--models", "4", "--epochs", "1", "--models-per-step", "2", "--max-models", "2"]
    assert main([*create, *small, "--quiet"]) == 0
    assert "in bf16 (cpu multiplies bfloat16 natively)" in capsys.readouterr().out
    assert json.loads((path / "spec.json").read_text())["precision"] == "bf16"
    line = _one_line_error(capsys, ["train", str(path), "--precision", "fp32"], "bf16", "fp32")
    assert "precision" in line
    monkeypatch.setattr(precision, "bf16_is_native", lambda device="cpu": False)
    assert main(["train", str(path), "--precision", "auto", "--quiet"]) == 0  # never a conflict
    assert "2 more of 4 models of mlp on cpu in bf16 (emulated" in capsys.readouterr().out
    assert json.loads((path / "spec.json").read_text())["precision"] == "bf16"


def test_models_per_step_defaults_to_the_devices_step_size(tmp_path, digits):
    # Picked at creation from the device (no GPU needed to check the choice).
    assert default_models_per_step("cpu") == 16
    assert default_models_per_step("cuda:1") == 128
    spec = ts.RunSpec.new(digits, ts.get_recipe("mlp"), device="cuda")
    assert spec.models_per_step == 128 and spec.device == "cuda"
    with pytest.raises(DataError, match="--device 'x' is not a torch device"):
        main(["--debug", "train", str(tmp_path / "r"), "--dataset", "digits", "--device", "x"])


# ---- experiment results print the intervals their header promises -----------------------
def _marginal_utility(n_repeats):
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0.8, 0.9, size=n_repeats)
    return MarginalUtility(
        thresholds=np.array([0.3, 0.6]),
        n_removed=np.array([40, 10]),
        n_train=200,
        baseline=baseline,
        targeted=rng.uniform(0.6, 0.8, size=(2, n_repeats)),
        random=rng.uniform(0.7, 0.9, size=(2, n_repeats)),
    )


def _influencer_removal(n_repeats):
    rng = np.random.default_rng(2)
    accuracy = {
        condition: {
            subset: rng.uniform(0.5, 1.0, size=n_repeats) for subset in InfluencerRemoval.SUBSETS
        }
        for condition in InfluencerRemoval.CONDITIONS
    }
    return InfluencerRemoval(
        influencers=np.array([3, 5, 8]),
        influenced=np.array([1, 2]),
        n_train=200,
        n_test=60,
        accuracy=accuracy,
    )


def _ci_text(values, signed=False):
    ci = interval(values)
    sign = "+" if signed else ""
    return f"[{100 * ci['low']:{sign}.2f}, {100 * ci['high']:{sign}.2f}]"


def _experiment_output(monkeypatch, capsys, run_dir, argv, result):
    import tailscope.experiments as experiments

    name = "marginal_utility" if argv[0] == "removal" else "remove_influencers"
    monkeypatch.setattr(experiments, name, lambda *args, **kwargs: result)
    assert main(["experiment", *argv, str(run_dir), "--quiet"]) == 0
    return capsys.readouterr().out.splitlines()


def test_experiment_removal_prints_t_intervals(trained_run, monkeypatch, capsys):
    result = _marginal_utility(n_repeats=3)
    lines = _experiment_output(monkeypatch, capsys, trained_run, ["removal"], result)
    assert "95% t interval" in lines[0]
    for t, theta in enumerate(result.thresholds):
        (line,) = [x for x in lines if x.strip().startswith(f"theta {theta:.2f}")]
        assert _ci_text(result.targeted[t]) in line
        assert _ci_text(result.random[t]) in line
        assert _ci_text(result.random[t] - result.targeted[t], signed=True) in line


def test_experiment_influencers_prints_t_intervals(trained_run, monkeypatch, capsys):
    result = _influencer_removal(n_repeats=4)
    lines = _experiment_output(monkeypatch, capsys, trained_run, ["influencers"], result)
    assert "95% t interval" in lines[0]
    full = result.accuracy["full"]
    for condition in result.CONDITIONS:
        (line,) = [x for x in lines if x.split(" all ")[0].strip() == condition]
        for subset in result.SUBSETS:
            assert _ci_text(result.accuracy[condition][subset]) in line
        if condition != "full":
            (drop,) = [x for x in lines if x.strip().startswith(f"full - {condition}")]
            for subset in result.SUBSETS:
                paired = full[subset] - result.accuracy[condition][subset]
                assert _ci_text(paired, signed=True) in drop


def test_experiment_with_one_repeat_says_there_are_no_intervals(trained_run, monkeypatch, capsys):
    lines = _experiment_output(monkeypatch, capsys, trained_run, ["removal"], _marginal_utility(1))
    assert "no intervals" in lines[0]
    assert not any("[" in line or "nan" in line for line in lines[1:3])


# ---- a closed stdout (tailscope ... | head) ends quietly ---------------------------------
def _only_warnings(stderr):
    # A 4-model run warns about undefined memorization; nothing else may reach stderr.
    for line in stderr.splitlines():
        assert line.startswith("tailscope: warning:"), stderr


class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_closed_stdout_mid_command_exits_quietly(trained_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["estimate", str(trained_run)]) == cli.EXIT_BROKEN_PIPE
    _only_warnings(capsys.readouterr().err)


def test_estimate_into_a_closed_pipe_exits_quietly(trained_run):
    # The reader closes before reading anything, so the output (buffered, written at the end)
    # meets a closed pipe every time: no race with how fast the reader is.
    command = [sys.executable, "-m", "tailscope", "estimate", str(trained_run)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == cli.EXIT_BROKEN_PIPE
    _only_warnings(err)


# ---- help: every command described, every option explained with its default -------------
def _parsers(parser, name="tailscope"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_and_option_has_help_with_its_default():
    for name, parser in _parsers(cli.build_parser()):
        assert parser.description, f"{name} has no description"
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue  # the list of commands; each has its own help
            assert action.help, f"{name} {action.dest} has no help"
            default = action.default
            if not action.option_strings or default in (None, [], argparse.SUPPRESS):
                continue
            if default is False or "default" in action.help:
                continue
            assert f"(default: {default})" in text, f"{name} {action.dest}"


def test_demo_help_shows_its_defaults_and_top_level_the_demo_time(capsys):
    assert main(["demo", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 512)", "(default: 2)", "(default: runs/demo)"):
        assert default in out
    assert main(["--help"]) == 0
    assert "about 1.5 minutes on 2 cores" in " ".join(capsys.readouterr().out.split())
