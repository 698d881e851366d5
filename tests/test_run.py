"""Run: create, train, resume (also after SIGKILL), reopen, estimate."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import tailscope as ts
from tailscope.engine import ModelOutputs, precision
from tailscope.errors import DataError, RunBusyError, SpecMismatchError
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.stopping import Progress, max_models, smoothed_memorization_se, until_se


def _train(path, data, recipe, **kw):
    run = ts.Run.create(
        path,
        data,
        recipe,
        n_models=kw.pop("n_models", 8),
        ratio=0.7,
        seed=kw.pop("seed", 0),
        models_per_step=kw.pop("models_per_step", 4),
        **kw,
    )
    return run.train(progress=False)


def _train_only(run, chunks):
    """Train just these chunks, as if the process had died after them."""
    job = run._job(run._masks_and_seeds(), "cpu")
    ts.execute.LocalExecutor().run(job, chunks, run.store.write)


def test_train_records_every_model_and_estimates(tmp_path, digits, tiny_recipe):
    run = _train(tmp_path / "r", digits, tiny_recipe)
    assert run.n_finished == 8
    assert run.chunks() == []
    est = run.estimate()
    # With 8 models some examples are in every subset or in none: NaN, and one warning.
    with pytest.warns(UndefinedEstimateWarning, match="undefined"):
        mem = est.memorization
    never_out = run.store.masks[:].all(axis=0) | ~run.store.masks[:].any(axis=0)
    np.testing.assert_array_equal(np.isnan(mem), never_out)
    assert est.memorization.shape == (digits.n_train,)
    assert est.memorization_se.shape == (digits.n_train,)
    # Models learn: mean test accuracy well above chance (10 classes).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        assert est.summary()["test_accuracy"] > 0.6
    # Margins agree with correctness wherever the margin is not a tie.
    margin = run.store.rows("margin_test").astype(np.float32)
    correct = run.store.rows("correct_test")
    assert np.array_equal(margin[margin != 0] > 0, correct[margin != 0])


def test_interrupted_run_resumes_to_identical_results(tmp_path, digits, tiny_recipe):
    full = _train(tmp_path / "full", digits, tiny_recipe)
    run = ts.Run.create(
        tmp_path / "part", digits, tiny_recipe, n_models=8, seed=0, models_per_step=4
    )
    # Train only the first chunk, as if the process died after it.
    _train_only(run, run.chunks()[:1])
    reopened = ts.Run.open(tmp_path / "part", data=digits, model=tiny_recipe)
    assert reopened.n_finished == 4
    assert [list(c) for c in reopened.chunks()] == [[4, 5, 6, 7]]
    reopened.train(progress=False)
    for name in ModelOutputs.ROWS:
        assert np.array_equal(reopened.store.rows(name), full.store.rows(name)), name
    for a, b in zip(
        reopened.store.oos_probabilities(), full.store.oos_probabilities(), strict=True
    ):
        assert np.array_equal(a, b, equal_nan=True)


def test_same_spec_reopens_and_different_spec_names_the_difference(tmp_path, digits, tiny_recipe):
    _train(tmp_path / "r", digits, tiny_recipe)
    again = ts.Run.create(
        tmp_path / "r", digits, tiny_recipe, n_models=8, seed=0, models_per_step=4
    )
    assert again.n_finished == 8
    with pytest.raises(SpecMismatchError, match="seed: stored 0, requested 1"):
        ts.Run.create(tmp_path / "r", digits, tiny_recipe, n_models=8, seed=1, models_per_step=4)
    other = digits.subset(n_train=200)
    with pytest.raises(SpecMismatchError, match="dataset.hash"):
        ts.Run.create(tmp_path / "r", other, tiny_recipe, n_models=8, seed=0, models_per_step=4)


def test_auto_precision_is_resolved_once_and_recorded(tmp_path, digits, tiny_recipe, monkeypatch):
    spec = {"n_models": 4, "seed": 0, "models_per_step": 2}
    monkeypatch.setattr(precision, "bf16_is_native", lambda device="cpu": True)
    run = ts.Run.create(tmp_path / "r", digits, tiny_recipe, **spec)  # precision="auto"
    assert run.precision == run.spec.precision == "bf16"
    # On a machine without native bf16, reopening with auto keeps what was resolved.
    monkeypatch.setattr(precision, "bf16_is_native", lambda device="cpu": False)
    again = ts.Run.create(tmp_path / "r", digits, tiny_recipe, **spec)
    assert again.precision == "bf16"
    assert ts.Run.create(tmp_path / "other", digits, tiny_recipe, **spec).precision == "fp32"
    with pytest.raises(SpecMismatchError, match="precision: stored 'bf16', requested 'fp32'"):
        ts.Run.create(tmp_path / "r", digits, tiny_recipe, precision="fp32", **spec)


def test_builtin_run_reopens_without_data_or_recipe(tmp_path):
    data = ts.datasets.load("digits", n_train=200, n_test=50, random_state=1)
    run = ts.Run.create(tmp_path / "r", data, "mlp", n_models=4, epochs=1, models_per_step=2)
    run.train(progress=False)
    reopened = ts.Run.open(tmp_path / "r")
    assert reopened.dataset.content_hash == data.content_hash
    assert reopened.recipe.to_spec() == run.recipe.to_spec()
    assert reopened.n_finished == 4


def test_arrays_run_needs_its_data_to_train_again(tmp_path, digits, tiny_recipe):
    data = ts.datasets.from_arrays(digits.x_train, digits.y_train, digits.x_test, digits.y_test)
    ts.Run.create(tmp_path / "r", data, tiny_recipe, n_models=4, models_per_step=4)
    run = ts.Run.open(tmp_path / "r", model=tiny_recipe)
    with pytest.raises(DataError, match="in-memory arrays"):
        run.train(progress=False)
    # Estimation needs no data: labels are stored in the run.
    with pytest.raises(DataError, match="0 finished models"):
        run.estimate()


def test_partial_run_estimates_from_finished_models(tmp_path, digits, tiny_recipe):
    run = ts.Run.create(tmp_path / "r", digits, tiny_recipe, n_models=8, models_per_step=4)
    _train_only(run, run.chunks()[1:2])
    est = run.estimate()
    assert est.n_models == 4
    assert np.array_equal(est.masks, run.store.masks[4:])


SCRIPT = """
import sys, torch
import tailscope as ts
sys.path.insert(0, {tests!r})
from conftest import tiny_mlp
data = ts.datasets.load("digits", n_train=300, n_test=100, random_state=0)
recipe = ts.Recipe(name="tiny-mlp", build=tiny_mlp, epochs={epochs}, batch_size=32, lr=0.1,
                   momentum=0.9)
run = ts.Run.create(sys.argv[1], data, recipe, n_models=24, seed=5, models_per_step=2,
                    precision="fp32")
run.train(progress=False)
"""


def _run_script(path: Path, epochs: int) -> subprocess.Popen:
    code = SCRIPT.format(tests=str(Path(__file__).parent), epochs=epochs)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, str(path)], env=env)


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    """A training process killed with SIGKILL mid-run, resumed, gives identical estimates."""
    killed = tmp_path / "killed"
    proc = _run_script(killed, epochs=6)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (killed / "spec.json").exists():
            done = ts.Run.open(killed, writable=False).n_finished
            if 4 <= done < 24:
                break
        if proc.poll() is not None:
            pytest.fail("the training process ended before it could be killed")
        time.sleep(0.05)
    else:
        pytest.fail("no model finished within 120 s")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = ts.Run.open(killed, writable=False).n_finished
    assert 0 < n_done < 24

    assert _run_script(killed, epochs=6).wait() == 0  # resume
    assert _run_script(tmp_path / "clean", epochs=6).wait() == 0  # never interrupted

    a = ts.Run.open(killed, writable=False)
    b = ts.Run.open(tmp_path / "clean", writable=False)
    assert a.n_finished == b.n_finished == 24
    for name in ModelOutputs.ROWS:
        assert np.array_equal(a.store.rows(name), b.store.rows(name)), name
    for pa, pb in zip(a.store.oos_probabilities(), b.store.oos_probabilities(), strict=True):
        assert np.array_equal(pa, pb, equal_nan=True)
    ea, eb = a.estimate(), b.estimate()
    assert np.array_equal(ea.memorization, eb.memorization, equal_nan=True)
    assert np.array_equal(ea.memorization_se, eb.memorization_se, equal_nan=True)
    pa = ea.high_influence_pairs(infl=0.3, mem=0.1, fdr=None)
    pb = eb.high_influence_pairs(infl=0.3, mem=0.1, fdr=None)
    assert len(pa) > 0 and pa.equals(pb)


def test_adaptive_stopping_stops_at_the_se_target_and_records_why(tmp_path, digits, tiny_recipe):
    from tailscope.stopping import smoothed_memorization_se

    run = ts.Run.create(tmp_path / "r", digits, tiny_recipe, n_models=64, models_per_step=4)
    run.train(progress=False, until_se=0.25, quantile=0.5, min_models=8, check_every=8)
    info = run.stopping
    assert info["reason"] == "se_target"
    k = run.n_finished
    assert 8 <= k < 64 and k % 8 == 0
    # The rule held when it stopped, and did not hold one round earlier.
    masks, correct = run.store.masks, run.store.rows("correct_train", np.arange(64))
    assert np.quantile(smoothed_memorization_se(masks[:k], correct[:k]), 0.5) <= 0.25
    if k > 8:
        assert np.quantile(smoothed_memorization_se(masks[: k - 8], correct[: k - 8]), 0.5) > 0.25
    assert info["se_quantile"] <= 0.25 and info["models"] == k
    # Resuming with a tighter target continues from where it stopped.
    run.train(
        progress=False, until_se=0.15, quantile=0.5, min_models=8, check_every=8, max_models=32
    )
    assert run.n_finished == 32 or run.stopping["reason"] == "se_target"
    assert run.n_finished >= k


def test_max_models_caps_training(tmp_path, digits, tiny_recipe):
    run = ts.Run.create(tmp_path / "r", digits, tiny_recipe, n_models=16, models_per_step=4)
    run.train(progress=False, max_models=8)
    assert run.n_finished == 8 and run.stopping["reason"] == "max_models"
    with pytest.raises(DataError, match="max_models"):
        run.train(progress=False, max_models=17)
    run.train(progress=False)
    assert run.stopping["reason"] == "all_models"


def test_se_quantile_ignores_a_few_undefined_examples_without_warnings():
    # 3 of 100 examples are in every subset (SE inf): the 0.95 quantile is still finite and
    # is the SE of a real example; the 0.99 one is inf. No warning from inf - inf.
    rng = np.random.default_rng(0)
    masks = rng.random((64, 100)) < 0.5
    masks[:, :3] = True
    correct = rng.random((64, 100)) < 0.8
    se = smoothed_memorization_se(masks, correct)
    progress = Progress(masks, correct)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = until_se(0.05, quantile=0.95).check(progress).record()["se_quantile"]
        assert until_se(0.05, quantile=0.99).check(progress).record()["se_quantile"] is None
    assert np.isfinite(value) and value in se
    assert np.mean(se <= value) >= 0.95


def test_smoothed_se_is_never_zero_for_few_models():
    masks = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=bool)
    correct = np.ones((4, 2), dtype=bool)  # always right: plug-in SE would be 0
    se = smoothed_memorization_se(masks, correct)
    assert (se > 0.2).all()
    progress = Progress(masks, correct)
    assert not until_se(0.1, min_models=2).check(progress).stop
    assert until_se(0.1, min_models=2).check(progress).record()["se_quantile"] > 0.1
    assert until_se(0.1, min_models=5).check(progress).record()["se_quantile"] is None


def test_stopping_rules_compose_with_or_and_and():
    masks = np.random.default_rng(0).random((40, 30)) < 0.5
    correct = np.ones((40, 30), dtype=bool)
    few, many = Progress(masks[:10], correct[:10]), Progress(masks, correct)
    loose = until_se(0.5, quantile=0.5, min_models=2)  # met at 10 models already
    either, both = loose | max_models(20), loose & max_models(20)
    assert either.check(few).stop and either.check(few).reason == "se_target"
    assert not both.check(few).stop and both.check(many).stop
    assert both.check(many).reason == "se_target & max_models"
    assert either.limit() == 20 and both.limit() == float("inf")  # both: until_se has none
    assert (until_se(0.01) | max_models(30)).limit() == 30
    assert (until_se(0.01) & max_models(30)).limit() == float("inf")
    assert dict(either.check(few).measured)["max_models"] == 20
    with pytest.raises(DataError, match="until_se must be a finite number in \\(0"):
        until_se(1.5)
    with pytest.raises(DataError, match="max_models must be an integer >= 2"):
        max_models(1)


def test_a_composed_rule_stops_training(tmp_path, digits, tiny_recipe):
    run = ts.Run.create(tmp_path / "r", digits, tiny_recipe, n_models=32, models_per_step=4)
    run.train(progress=False, stop=until_se(0.01, min_models=2) | max_models(12), check_every=4)
    assert run.n_finished == 12 and run.stopping["reason"] == "max_models"
    assert run.stopping["target_se"] == 0.01 and run.stopping["se_quantile"] > 0.01


def test_a_second_trainer_fails_in_one_line_while_the_first_finishes(tmp_path, digits):
    # The first trainer runs in another process; the second, here, must fail at once.
    path = tmp_path / "r"
    script = (
        "import sys, functools, tailscope as ts\n"
        "recipe = ts.Recipe('mlp-32', functools.partial(ts.models.mlp, hidden=(32,)), 60, 32,"
        " 0.1, momentum=0.9)\n"
        "data = ts.datasets.load('digits', n_train=300, n_test=100)\n"
        "run = ts.Run.create(sys.argv[1], data, recipe, n_models=8, models_per_step=2,"
        " precision='fp32')\n"
        "run.train(progress=False)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: not slowed by a busy machine
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
        (path / "spec.json").exists() and ts.Run.open(path, writable=False).store.trainer()
    ):
        time.sleep(0.05)
    run = ts.Run.open(path)
    with pytest.raises(RunBusyError) as info:
        run.train(progress=False)
    assert str(info.value) == f"{path} is being trained by pid {proc.pid} on {os.uname().nodename}"
    assert "\n" not in str(info.value)
    assert proc.wait() == 0
    assert ts.Run.open(path, writable=False).n_finished == 8  # the first finished, once
    assert run.train(progress=False).n_finished == 8


def test_resuming_with_other_settings_names_both_values(tmp_path, digits, tiny_recipe):
    run = _train(tmp_path / "r", digits, tiny_recipe, n_models=4, models_per_step=2)
    run.check_settings(n_models=4, seed=0, precision="auto", epochs=None, dataset=digits)
    with pytest.raises(SpecMismatchError, match="epochs: stored 2, given 5"):
        run.check_settings(epochs=5)
    with pytest.raises(SpecMismatchError, match="n_models: stored 4, given 8; precision: "):
        run.check_settings(n_models=8, precision="bf16")
    with pytest.raises(SpecMismatchError, match="ratio: stored \\(0.7,\\), given \\(0.5,\\)"):
        run.check_settings(ratio=0.5)
    with pytest.raises(SpecMismatchError, match="dataset hash"):
        run.check_settings(dataset=digits.subset(n_train=200))


def test_a_multi_ratio_run_estimates_one_ratio_and_says_which(tmp_path, digits, tiny_recipe):
    run = ts.Run.create(
        tmp_path / "r", digits, tiny_recipe, n_models=4, ratio=(0.3, 0.7), models_per_step=4
    )
    assert run.n_models == 8 and [c.tolist() for c in run.chunks()] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    run.train(progress=False)
    assert run.models_of().tolist() == [4, 5, 6, 7]  # 0.7, the paper's ratio
    assert run.models_of(0.3).tolist() == [0, 1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        est = run.estimate()
    assert np.array_equal(est.masks, run.store.masks[4:])
    assert run.store.masks[:4].sum(axis=1).tolist() == [90] * 4
    with pytest.raises(DataError, match="no models of ratio 0.5"):
        run.estimate(0.5)
    with pytest.raises(DataError, match="stopping rules apply to runs of one subset ratio"):
        run.train(progress=False, until_se=0.1)
    status = run.status()
    assert status.finished_per_ratio == {0.3: 4, 0.7: 4} and status.trainer is None
    assert "ratio 0.3: 4/4; ratio 0.7: 4/4" in "\n".join(status.lines())


def test_retrain_honours_the_runs_precision_and_step(tmp_path, digits, tiny_recipe):
    calls = []

    class Recording:
        def run(self, job, chunks, on_chunk, progress=None):
            calls.append((job.precision, [c.tolist() for c in chunks]))
            ts.execute.LocalExecutor().run(job, chunks, on_chunk, progress)

    run = ts.Run.create(
        tmp_path / "r", digits, tiny_recipe, n_models=4, models_per_step=2, precision="bf16"
    )
    masks = np.ones((5, digits.n_train), dtype=bool)
    masks[[1, 3], :10] = False  # two sizes: 300 and 290 members
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 may be emulated here
        out = run.retrain(masks, np.arange(5), executor=Recording())
    assert calls == [("bf16", [[0, 2], [4], [1, 3]])]
    assert out.correct_test.shape == (5, digits.n_test)
    alone = run.retrain(masks[[3]], np.array([3]))
    assert np.array_equal(alone.correct_test[0], out.correct_test[3])  # rows in mask order
