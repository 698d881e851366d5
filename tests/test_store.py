"""The run store: layout, commit point, results, the trainer lock, old formats."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tailscope.engine import PROB_UNIT, ModelOutputs
from tailscope.errors import DataError, RunBusyError, RunStoreError
from tailscope.plan import SubsetPlan
from tailscope.spec import DatasetSpec, RunSpec
from tailscope.store import RunStore

K, N, T, C = 6, 10, 4, 3


def _spec(**changes) -> RunSpec:
    dataset = DatasetSpec(
        name="toy",
        hash="0" * 64,
        n_train=N,
        n_test=T,
        n_classes=C,
        class_names=("a", "b", "c"),
        feature_shape=(2,),
        source={"kind": "arrays"},
        scaling="none",
    )
    fields = dict(
        dataset=dataset,
        recipe={"name": "mlp", "lr": 0.1},
        n_models=K,
        ratios=(0.5,),
        seed=0,
        models_per_step=2,
        precision="fp32",
    )
    return RunSpec(**{**fields, **changes})


def _labels():
    return {
        "y_train": np.arange(N) % C,
        "y_test": np.arange(T) % C,
        "train_index": np.arange(N),
        "test_index": np.arange(T),
    }


def _store(tmp_path, spec=None):
    plan = SubsetPlan.random(K, N, ratio=0.5, random_state=0)
    return RunStore.create(tmp_path / "run", spec or _spec(), plan, _labels()), plan


def _outputs(rng, masks):
    """Outputs of models with subsets ``masks`` (k, n): random rows, probability sums of
    random probability vectors (over the models that held each train example out)."""
    k = len(masks)

    def units(width, weights):
        p = rng.dirichlet(np.ones(C), size=(k, width))
        return (np.round(p / PROB_UNIT).astype(np.int64) * weights[..., None]).sum(axis=0)

    rows = {}
    for split, width in (("train", N), ("test", T)):
        rows[f"correct_{split}"] = rng.random((k, width)) < 0.5
        rows[f"margin_{split}"] = rng.normal(size=(k, width)).astype(np.float16)
        rows[f"phi_{split}"] = rng.normal(size=(k, width)).astype(np.float16)
        rows[f"predicted_{split}"] = rng.integers(0, C, (k, width)).astype(np.int16)
    return ModelOutputs(
        **rows,
        prob_sum_train=units(N, ~masks),
        prob_sum_test=units(T, np.ones((k, T), dtype=np.int64)),
    )


def test_create_write_reopen(tmp_path):
    store, plan = _store(tmp_path)
    assert np.array_equal(store.masks, plan.masks) and store.n_finished == 0
    rng = np.random.default_rng(0)
    first, second = _outputs(rng, plan.masks[[2, 3]]), _outputs(rng, plan.masks[[4, 5]])
    store.write([2, 3], first)
    store.write([4, 5], second)
    again = RunStore.open(tmp_path / "run")
    assert again.finished().tolist() == [2, 3, 4, 5]
    for name in ModelOutputs.ROWS:
        expected = np.concatenate([getattr(first, name), getattr(second, name)])
        assert np.array_equal(again.rows(name), expected), name
        assert np.array_equal(again.rows(name, np.array([4])), getattr(second, name)[:1])
    train, test = again.oos_probabilities()
    # Means over the finished models that held each example out (train), over all (test).
    held_out = (~plan.masks[2:]).sum(axis=0)
    sums = first.prob_sum_train + second.prob_sum_train
    np.testing.assert_array_equal(train, sums * PROB_UNIT / held_out[:, None])
    np.testing.assert_allclose(test.sum(axis=1), 1, atol=C * PROB_UNIT)
    assert again.spec == store.spec


def test_the_sums_do_not_depend_on_the_order_chunks_arrive_in(tmp_path):
    plan = SubsetPlan.random(K, N, ratio=0.5, random_state=0)
    chunks = [[0, 1], [2, 3], [4, 5]]
    outputs = [_outputs(np.random.default_rng(i), plan.masks[c]) for i, c in enumerate(chunks)]
    results = []
    for name, order in (("a", [0, 1, 2]), ("b", [2, 0, 1])):
        store = RunStore.create(tmp_path / name, _spec(), plan, _labels())
        for i in order:
            store.write(chunks[i], outputs[i])
        results.append(RunStore.open(tmp_path / name).oos_probabilities())
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b, equal_nan=True)


def test_a_model_is_never_written_twice(tmp_path):
    store, plan = _store(tmp_path)
    outputs = _outputs(np.random.default_rng(0), plan.masks[[0, 1]])
    store.write([0, 1], outputs)
    with pytest.raises(RunStoreError, match="already written"):
        store.write([0, 1], outputs)


def test_read_only_store_refuses_writes(tmp_path):
    _, plan = _store(tmp_path)
    ro = RunStore.open(tmp_path / "run")
    with pytest.raises(RunStoreError, match="read-only"):
        ro.write([0, 1], _outputs(np.random.default_rng(0), plan.masks[[0, 1]]))
    with pytest.raises(RunStoreError, match="read-only"):
        ro.save_result("stopping", {})


def test_create_refuses_existing_run_and_files(tmp_path):
    _store(tmp_path)
    plan = SubsetPlan.random(K, N, random_state=0)
    with pytest.raises(RunStoreError, match="already holds a run"):
        RunStore.create(tmp_path / "run", _spec(), plan, _labels())
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(RunStoreError, match="not a directory"):
        RunStore.create(file, _spec(), plan, _labels())
    with pytest.raises(RunStoreError, match="not a directory"):
        RunStore.open(file)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("spec.json", b"{not json", "spec.json is corrupt"),
        ("spec.json", b'{"format": 2}', "spec.json is not a tailscope run spec"),
        ("spec.json", b'{"format": 7}', "format 7"),
        ("spec.json", None, "no spec.json"),
        ("masks.npy", b"garbage", "masks.npy is corrupt"),
        ("masks.npy", None, "masks.npy is missing"),
        ("labels.npz", b"garbage", "labels.npz is corrupt"),
        ("progress.npz", None, "progress.npz is missing"),
        ("correct_test.npy", "truncate", "correct_test.npy is corrupt"),
        ("phi_train.npy", None, "phi_train.npy is missing"),
    ],
)
def test_damaged_run_files_are_named(tmp_path, name, damage, message):
    _store(tmp_path)
    file = tmp_path / "run" / name
    if damage is None:
        file.unlink()
    elif damage == "truncate":
        file.write_bytes(file.read_bytes()[:-5])
    else:
        file.write_bytes(damage)
    with pytest.raises(RunStoreError, match=message):
        RunStore.open(tmp_path / "run")


def test_wrong_shape_output_is_named(tmp_path):
    _store(tmp_path)
    np.save(tmp_path / "run" / "margin_train.npy", np.zeros((K, 3), np.float16))
    with pytest.raises(RunStoreError, match="margin_train.npy has shape"):
        RunStore.open(tmp_path / "run")


def test_missing_directory(tmp_path):
    with pytest.raises(RunStoreError, match="does not exist"):
        RunStore.open(tmp_path / "nope")


def test_spec_json_is_plain_json_and_round_trips(tmp_path):
    store, _ = _store(tmp_path)
    record = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert record["format"] == 2 and record["ratios"] == [0.5]
    assert RunSpec.from_json(record) == store.spec


def test_results_are_saved_atomically_by_name(tmp_path):
    store, _ = _store(tmp_path)
    assert store.load_result("marginal_utility") is None
    store.save_result("marginal_utility", {"a": [1, 2]})
    frame = pd.DataFrame({"index": [3, 1], "mem": [0.5, np.nan]})
    path = store.save_result("memorization", frame)
    assert path.name == "memorization.csv"
    again = RunStore.open(tmp_path / "run")
    assert again.load_result("marginal_utility") == {"a": [1, 2]}
    pd.testing.assert_frame_equal(again.load_result("memorization"), frame)
    with pytest.raises(DataError, match="unknown result 'nope'"):
        store.save_result("nope", {})
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def _format_1_run(path):
    """A run directory as tailscope 0.1 wrote it: no phi/predicted rows, done.npy."""
    plan = SubsetPlan.random(K, N, ratio=0.5, random_state=0)
    path.mkdir()
    np.save(path / "masks.npy", plan.masks)
    np.save(path / "seeds.npy", plan.seeds)
    np.savez(path / "labels.npz", **_labels())
    rng = np.random.default_rng(0)
    np.save(path / "correct_train.npy", rng.random((K, N)) < 0.5)
    np.save(path / "correct_test.npy", rng.random((K, T)) < 0.5)
    np.save(path / "margin_train.npy", rng.normal(size=(K, N)).astype(np.float16))
    np.save(path / "margin_test.npy", rng.normal(size=(K, T)).astype(np.float16))
    np.save(path / "done.npy", np.array([True] * 4 + [False] * 2))
    spec = _spec().to_json()
    spec.update(format=1, ratio=0.5, subset_size=5)
    del spec["ratios"]
    del spec["precision"]
    (path / "spec.json").write_text(json.dumps(spec))
    return plan


def test_a_format_1_run_loads_trains_and_says_what_it_lacks(tmp_path):
    plan = _format_1_run(tmp_path / "old")
    store = RunStore.open(tmp_path / "old", writable=True)
    assert store.spec.format == 1 and store.spec.ratios == (0.5,)
    assert store.spec.precision == "fp32"
    assert store.finished().tolist() == [0, 1, 2, 3]
    assert store.rows("correct_train").shape == (4, N)
    assert store.has_rows("margin") and not store.has_rows("phi")
    with pytest.raises(RunStoreError, match="format 1.*no phi_train rows"):
        store.rows("phi_train")
    with pytest.raises(RunStoreError, match="did not record class probabilities"):
        store.oos_probabilities()
    outputs = _outputs(np.random.default_rng(1), plan.masks[[4, 5]])
    store.write([4, 5], outputs)  # only the rows format 1 has
    again = RunStore.open(tmp_path / "old")
    assert again.n_finished == K
    assert np.array_equal(again.rows("margin_test", np.array([5])), outputs.margin_test[1:])


def test_one_trainer_at_a_time_names_the_holder(tmp_path):
    store, _ = _store(tmp_path)
    assert store.trainer() is None
    with store.trainer_lock():
        holder = f"pid {os.getpid()} on "
        assert store.trainer().startswith(holder)
        with pytest.raises(RunBusyError, match=f"is being trained by {holder}"):
            with RunStore.open(tmp_path / "run").trainer_lock():
                pass
    with store.trainer_lock():  # released on exit
        pass


def test_a_killed_trainers_lock_does_not_block_the_next(tmp_path):
    _store(tmp_path)
    code = (
        "import sys, time; from tailscope.store import RunStore\n"
        "with RunStore.open(sys.argv[1]).trainer_lock():\n"
        "    print('locked', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    store = RunStore.open(tmp_path / "run")
    assert store.trainer() == f"pid {proc.pid} on {os.uname().nodename}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while store.trainer() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    with store.trainer_lock():
        assert store.trainer() is not None  # held by this process now


def test_a_multi_ratio_run_keeps_the_probability_sums_of_each_ratio(tmp_path):
    plan = SubsetPlan.random(K, N, ratio=(0.3, 0.6), random_state=0)
    store = RunStore.create(tmp_path / "run", _spec(ratios=(0.3, 0.6)), plan, _labels())
    low, high = (
        _outputs(np.random.default_rng(0), plan.masks[[0, 1]]),
        _outputs(np.random.default_rng(1), plan.masks[[6, 7]]),
    )
    store.write([0, 1], low)
    store.write([6, 7], high)
    with pytest.raises(RunStoreError, match="several subset ratios"):
        store.write([4, 8], low)
    again = RunStore.open(tmp_path / "run")
    for ratio, models, outputs in ((0.3, [0, 1], low), (0.6, [6, 7], high)):
        train, test = again.oos_probabilities(ratio)
        held_out = (~plan.masks[models]).sum(axis=0)  # 0 for some: NaN rows on both sides
        with np.errstate(invalid="ignore"):
            expected = outputs.prob_sum_train * PROB_UNIT / held_out[:, None]
        np.testing.assert_array_equal(train, expected)
        np.testing.assert_array_equal(test, outputs.prob_sum_test * PROB_UNIT / 2)
    with pytest.raises(DataError, match="has the ratios \\[0.3, 0.6\\]: name one"):
        again.oos_probabilities()
