import json

import numpy as np
import pytest

from tailscope.errors import RunStoreError, SpecMismatchError
from tailscope.plan import SubsetPlan
from tailscope.store import OUTPUTS, RunStore, spec_differences


def _labels(n, t):
    return {
        "y_train": np.arange(n) % 3,
        "y_test": np.arange(t) % 3,
        "train_index": np.arange(n),
        "test_index": np.arange(t),
    }


def _store(tmp_path, k=6, n=10, t=4):
    plan = SubsetPlan.random(k, n, ratio=0.5, random_state=0)
    spec = {"n_models": k, "seed": 0, "recipe": {"name": "mlp", "lr": 0.1}, "version": "x"}
    return RunStore.create(tmp_path / "run", spec, plan, _labels(n, t)), plan


def _rows(rng, models, n, t):
    return {
        "correct_train": rng.random((len(models), n)) < 0.5,
        "correct_test": rng.random((len(models), t)) < 0.5,
        "margin_train": rng.normal(size=(len(models), n)).astype(np.float16),
        "margin_test": rng.normal(size=(len(models), t)).astype(np.float16),
    }


def test_create_write_reopen(tmp_path):
    store, plan = _store(tmp_path)
    assert np.array_equal(store.masks, plan.masks)
    assert list(store.pending()) == list(range(6))
    rows = _rows(np.random.default_rng(0), [1, 4], 10, 4)
    store.write([1, 4], rows)
    again = RunStore.open(tmp_path / "run")
    assert list(again.finished()) == [1, 4]
    assert list(again.pending()) == [0, 2, 3, 5]
    for name in OUTPUTS:
        assert np.array_equal(again.read(name), rows[name])
    assert again.outputs["margin_test"].dtype == np.float16


def test_read_only_store_refuses_writes(tmp_path):
    _store(tmp_path)
    ro = RunStore.open(tmp_path / "run")
    with pytest.raises(RunStoreError, match="read-only"):
        ro.write([0], _rows(np.random.default_rng(0), [0], 10, 4))


def test_spec_mismatch_names_every_difference(tmp_path):
    store, _ = _store(tmp_path)
    requested = {**store.spec, "seed": 1, "recipe": {"name": "mlp", "lr": 0.2}, "version": "y"}
    with pytest.raises(SpecMismatchError) as err:
        store.check_spec(requested)
    msg = str(err.value)
    assert "seed: stored 0, requested 1" in msg
    assert "recipe.lr: stored 0.1, requested 0.2" in msg
    assert "version" not in msg  # informational only
    store.check_spec({**store.spec, "version": "other"})  # no error


def test_spec_differences_nested_and_missing():
    assert spec_differences({"a": {"b": 1}}, {"a": {"b": 1}}) == []
    assert spec_differences({"a": 1}, {}) == ["a: stored 1, requested None"]


def test_create_refuses_existing_run_and_files(tmp_path):
    _store(tmp_path)
    plan = SubsetPlan.random(2, 10, random_state=0)
    with pytest.raises(RunStoreError, match="already holds a run"):
        RunStore.create(tmp_path / "run", {}, plan, _labels(10, 4))
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(RunStoreError, match="not a directory"):
        RunStore.create(file, {}, plan, _labels(10, 4))
    with pytest.raises(RunStoreError, match="not a directory"):
        RunStore.open(file)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("spec.json", b"{not json", "spec.json is corrupt"),
        ("spec.json", None, "no spec.json"),
        ("masks.npy", b"garbage", "masks.npy is corrupt"),
        ("masks.npy", None, "masks.npy is missing"),
        ("labels.npz", b"garbage", "labels.npz is corrupt"),
        ("done.npy", None, "done.npy is missing"),
        ("correct_test.npy", "truncate", "correct_test.npy is corrupt"),
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
    np.save(tmp_path / "run" / "margin_train.npy", np.zeros((6, 3), np.float16))
    with pytest.raises(RunStoreError, match="margin_train.npy has shape"):
        RunStore.open(tmp_path / "run")


def test_missing_directory(tmp_path):
    with pytest.raises(RunStoreError, match="does not exist"):
        RunStore.open(tmp_path / "nope")


def test_spec_json_is_plain_json(tmp_path):
    store, _ = _store(tmp_path)
    assert json.loads((tmp_path / "run" / "spec.json").read_text()) == store.spec
