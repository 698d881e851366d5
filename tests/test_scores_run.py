"""``ts.scores(run)`` and ``tailscope scores``: every per-example score of a real run."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import tailscope as ts
from tailscope.cli import main
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.experiments import analyze


@pytest.fixture(scope="module")
def multi_ratio_run(digits, tmp_path_factory):
    """8 models of each of the ratios 0.3, 0.5 and 0.7 on the 300/100 digits subset."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("scores") / "run"
    recipe = ts.Recipe(
        name="mlp-32",
        build=lambda shape, c: torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, c)
        ),
        epochs=8,
        batch_size=32,
        lr=0.1,
        momentum=0.9,
    )
    run = ts.Run.create(path, digits, recipe, n_models=8, ratio=(0.3, 0.5, 0.7), models_per_step=8)
    return run.train(progress=False)


def _scores(run, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        return ts.scores(run, **options)


def test_a_runs_scores_cover_every_example_in_the_datasets_order(multi_ratio_run, digits):
    tables = _scores(multi_ratio_run)
    train, test = tables.train, tables.test
    assert len(train) == digits.n_train and len(test) == digits.n_test
    np.testing.assert_array_equal(train["index"], digits.train_index)
    np.testing.assert_array_equal(test["label"], digits.y_test)
    for column in (
        "mem",
        "mem_se",
        "mem_q",
        "heldout_acc",
        "cscore",
        "lira_online",
        "lira_offline",
        "lira_fixed",
        "vulnerability",
        "label_quality",
        "label_issue",
        "suggested_label",
    ):
        assert column in train, column
    assert {"heldout_acc", "cscore", "label_quality"} <= set(test)
    assert tables.skipped == []
    # mem, LiRA and label issues use the 0.7 models only; held-out accuracy every ratio's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        mem = multi_ratio_run.estimate(0.7).memorization
    np.testing.assert_array_equal(train["mem"], mem)
    assert any("ratio 0.7" in note for note in tables.notes)
    masks = np.asarray(multi_ratio_run.store.masks)
    correct = multi_ratio_run.store.rows("correct_train")
    out = ~masks
    with np.errstate(invalid="ignore"):
        expected = (correct & out).sum(axis=0) / out.sum(axis=0)
    np.testing.assert_allclose(train["heldout_acc"], expected)
    per_ratio = [train[f"heldout_acc_r{r:g}"] for r in (0.3, 0.5, 0.7)]
    np.testing.assert_allclose(train["cscore"], np.mean(per_ratio, axis=0))
    assert len(tables.lira.targets) <= 8  # the 0.7 models


def test_scores_are_saved_for_the_report_and_the_cli_writes_them(multi_ratio_run, capsys):
    assert main(["scores", str(multi_ratio_run.path), "--ratio", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "membership inference" in out and "label issues (test)" in out
    assert "use the 8 models of ratio 0.5" in out
    train = pd.read_csv(multi_ratio_run.path / "train_scores.csv")
    record = json.loads((multi_ratio_run.path / "lira.json").read_text())
    assert record["ratio"] == 0.5 and {"online", "offline", "global"} <= set(record["roc"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        result = analyze(ts.Run.open(multi_ratio_run.path), fdr=None, gallery_size=3)
        np.testing.assert_allclose(
            train["mem"], multi_ratio_run.estimate(0.5).memorization, equal_nan=True
        )
    pd.testing.assert_frame_equal(result.scores.train, train)
    assert result.scores.lira["summary"][0]["variant"] == "online"


def test_a_run_without_logit_margins_says_what_is_missing(tmp_path, digits):
    # A format-1 run (tailscope 0.1): correctness and margins only.
    torch.set_num_threads(1)
    run = ts.Run.create(tmp_path / "run", digits, "mlp", n_models=4, epochs=1, precision="fp32")
    run.train(progress=False)
    path = run.path
    spec = json.loads((path / "spec.json").read_text())
    spec.update(format=1, ratio=spec.pop("ratios")[0])
    (path / "spec.json").write_text(json.dumps(spec))
    np.save(path / "done.npy", np.ones(4, dtype=bool))
    for name in ("phi_train", "phi_test", "predicted_train", "predicted_test"):
        (path / f"{name}.npy").unlink()
    tables = _scores(ts.Run.open(path))
    assert "heldout_acc" in tables.train and "lira_online" not in tables.train
    missing = [line for line in tables.skipped if "format 1" in line]
    assert any(line.startswith("lira, vulnerability") and "retrain" in line for line in missing)
    assert all("\n" not in line for line in tables.skipped)
