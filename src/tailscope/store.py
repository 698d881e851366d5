"""RunStore: the on-disk run, crash-safe and resumable.

A run directory holds everything needed to reproduce and extend it::

    spec.json          what was asked for: dataset identity, recipe, K, ratio, seed, version
    masks.npy          (K, n) bool subset plan, written once before any training
    seeds.npy          (K,) int64 training seed of each model
    labels.npz         y_train (n,), y_test (t,), train_index (n,), test_index (t,)
    correct_train.npy  (K, n) bool    -- one row per model, memory-mapped
    correct_test.npy   (K, t) bool
    margin_train.npy   (K, n) float16 true-class margin logit[y] - max_{c != y} logit[c]
    margin_test.npy    (K, t) float16
    done.npy           (K,) bool      -- set only after the model's rows are flushed

``spec.json`` is written last when a run is created, so a directory without it is not a run.
A model's ``done`` flag is set only after its rows are flushed to disk; a run killed at any
point and reopened trains exactly the models whose flag is not set. Only the process that
owns the run writes to it. Nothing is ever unpickled: arrays are plain ``.npy``/``.npz``
loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tailscope.errors import RunStoreError, SpecMismatchError
from tailscope.plan import SubsetPlan

__all__ = ["OUTPUTS", "RunStore", "spec_differences"]

#: Per-model output arrays: name -> (dtype, which split's length is the row width).
OUTPUTS: dict[str, tuple[type, str]] = {
    "correct_train": (np.bool_, "train"),
    "correct_test": (np.bool_, "test"),
    "margin_train": (np.float16, "train"),
    "margin_test": (np.float16, "test"),
}

#: Spec keys recorded for information only; they may differ when a run is reopened.
_INFORMATIONAL = frozenset({"version", "created"})


def spec_differences(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two specs (informational keys ignored)."""
    out = []
    for key in sorted(set(stored) | set(requested)):
        if not prefix and key in _INFORMATIONAL:
            continue
        a, b = stored.get(key), requested.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += spec_differences(a, b, prefix=f"{name}.")
        elif a != b:
            out.append(f"{name}: stored {a!r}, requested {b!r}")
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStore:
    """Read and write one run directory (see the module docstring for the layout)."""

    def __init__(self, path: Path, spec: dict, writable: bool) -> None:
        self.path = path
        self.spec = spec
        self.writable = writable
        self.masks = self._load("masks.npy", mmap=True)
        self.seeds = self._load("seeds.npy")
        labels = self._load_npz("labels.npz")
        self.y_train, self.y_test = labels["y_train"], labels["y_test"]
        self.train_index, self.test_index = labels["train_index"], labels["test_index"]
        k, n = self.masks.shape
        t = len(self.y_test)
        if self.masks.dtype != np.bool_ or len(self.seeds) != k or len(self.y_train) != n:
            raise RunStoreError(f"{path}: masks.npy, seeds.npy and labels.npz do not agree")
        mode = "r+" if writable else "r"
        self.outputs: dict[str, np.ndarray] = {}
        for name, (dtype, split) in OUTPUTS.items():
            arr = self._load(f"{name}.npy", mmap=True, mode=mode)
            if arr.shape != (k, n if split == "train" else t) or arr.dtype != dtype:
                raise RunStoreError(
                    f"{path / (name + '.npy')} has shape {arr.shape} and dtype {arr.dtype}, "
                    f"expected {(k, n if split == 'train' else t)} {np.dtype(dtype)}"
                )
            self.outputs[name] = arr
        self.done = self._load("done.npy", mmap=True, mode=mode)
        if self.done.shape != (k,) or self.done.dtype != np.bool_:
            raise RunStoreError(f"{path / 'done.npy'} is corrupt (shape {self.done.shape})")

    # ---- creating and opening ----------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        spec: dict,
        plan: SubsetPlan,
        labels: dict[str, np.ndarray],
    ) -> RunStore:
        """Create a new run directory; ``labels`` holds y_train, y_test, train_index,
        test_index. Fails if ``path`` already holds a run or is a file."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunStoreError(f"run directory {path} exists and is not a directory")
        if (path / "spec.json").exists():
            raise RunStoreError(f"{path} already holds a run; open it instead")
        path.mkdir(parents=True, exist_ok=True)
        k, n = plan.masks.shape
        t = len(labels["y_test"])
        _atomic_save_npy(path / "masks.npy", plan.masks)
        _atomic_save_npy(path / "seeds.npy", plan.seeds)
        buf = io.BytesIO()
        np.savez(buf, **{key: np.asarray(v) for key, v in labels.items()})
        _atomic_write_bytes(path / "labels.npz", buf.getvalue())
        for name, (dtype, split) in OUTPUTS.items():
            shape = (k, n if split == "train" else t)
            np.lib.format.open_memmap(path / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        done = np.lib.format.open_memmap(path / "done.npy", mode="w+", dtype=np.bool_, shape=(k,))
        done.flush()
        del done
        # spec.json last: its presence marks a complete run directory.
        _atomic_write_bytes(path / "spec.json", json.dumps(spec, indent=2).encode())
        return cls(path, spec, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, writable: bool = False) -> RunStore:
        """Open an existing run directory, validating every file."""
        path = Path(path)
        if not path.exists():
            raise RunStoreError(f"run directory {path} does not exist")
        if not path.is_dir():
            raise RunStoreError(f"run directory {path} is not a directory")
        spec_file = path / "spec.json"
        if not spec_file.exists():
            raise RunStoreError(f"{path} is not a tailscope run (no spec.json)")
        try:
            spec = json.loads(spec_file.read_text())
        except (OSError, ValueError) as e:
            raise RunStoreError(f"{spec_file} is corrupt: {e}") from None
        if not isinstance(spec, dict):
            raise RunStoreError(f"{spec_file} is corrupt: not a JSON object")
        return cls(path, spec, writable=writable)

    def check_spec(self, requested: dict) -> None:
        """Raise :class:`SpecMismatchError` naming every difference from ``requested``."""
        diffs = spec_differences(self.spec, requested)
        if diffs:
            raise SpecMismatchError(
                f"{self.path} was created with a different spec: " + "; ".join(diffs)
            )

    # ---- file access -------------------------------------------------------------------
    def _load(self, name: str, mmap: bool = False, mode: str = "r") -> np.ndarray:
        file = self.path / name
        if not file.exists():
            raise RunStoreError(f"{file} is missing")
        try:
            if mmap:
                return np.lib.format.open_memmap(file, mode=mode)
            return np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise RunStoreError(f"{file} is corrupt: {e}") from None

    def _load_npz(self, name: str) -> dict[str, np.ndarray]:
        file = self.path / name
        if not file.exists():
            raise RunStoreError(f"{file} is missing")
        try:
            with np.load(file, allow_pickle=False) as z:
                return {key: z[key] for key in z.files}
        except Exception as e:  # zipfile / format errors come in many types
            raise RunStoreError(f"{file} is corrupt: {e}") from None

    def write_json(self, name: str, obj: object) -> None:
        """Atomically write a small JSON record (e.g. ``stopping.json``) into the run."""
        if not self.writable:
            raise RunStoreError(f"{self.path} was opened read-only")
        _atomic_write_bytes(self.path / name, json.dumps(obj, indent=2).encode())

    def read_json(self, name: str) -> dict | None:
        """A JSON record written by :meth:`write_json`, or None if there is none."""
        file = self.path / name
        if not file.exists():
            return None
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError) as e:
            raise RunStoreError(f"{file} is corrupt: {e}") from None

    # ---- progress ----------------------------------------------------------------------
    @property
    def n_models(self) -> int:
        return self.masks.shape[0]

    def pending(self) -> np.ndarray:
        """Indices of the models whose completion flag is not set."""
        return np.flatnonzero(~np.asarray(self.done))

    def finished(self) -> np.ndarray:
        """Indices of the models whose rows are on disk."""
        return np.flatnonzero(np.asarray(self.done))

    def write(self, models: Sequence[int], rows: dict[str, np.ndarray]) -> None:
        """Write the output rows of ``models`` and only then mark them done.

        ``rows[name]`` has one row per entry of ``models``, for every name in ``OUTPUTS``.
        Rows are flushed (msync) before the flags are set and flushed, so a model flagged
        done always has its rows on disk.
        """
        if not self.writable:
            raise RunStoreError(f"{self.path} was opened read-only")
        idx = np.asarray(models, dtype=np.int64)
        for name, arr in self.outputs.items():
            arr[idx] = rows[name]
        for arr in self.outputs.values():
            arr.flush()
        self.done[idx] = True
        self.done.flush()

    def read(self, name: str, models: np.ndarray | None = None) -> np.ndarray:
        """Rows of one output array (all finished models by default), as a memmap view when
        every model is finished, else a copy of the selected rows."""
        arr = self.outputs[name]
        if models is None:
            models = self.finished()
        if len(models) == self.n_models:
            return arr
        return arr[models]
