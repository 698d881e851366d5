"""RunStore: the on-disk run, crash-safe and resumable. It owns every file name of a run.

A run directory holds everything needed to reproduce and extend it::

    spec.json            the RunSpec (written last at creation: without it, not a run)
    masks.npy            (K, n) bool subset plan, written once before any training
    seeds.npy            (K,) int64 training seed of each model
    labels.npz           y_train (n,), y_test (t,), train_index (n,), test_index (t,)
    <row>_<split>.npy    one row per model, memory-mapped: correct (bool), margin and phi
                         (float16), predicted (int16), for split train (n) and test (t)
    progress.npz         done (K,) bool and the out-of-sample probability sums per subset
                         ratio, prob_sum_train (R, n, C) and prob_sum_test (R, t, C), int64
    train.lock           held by the one process that trains the run
    stopping.json, memorization.csv, pairs.csv, ...   results (:data:`RESULTS`)

**Commit point.** A chunk's rows are written and flushed first; then ``progress.npz`` is
replaced atomically by one with the chunk's done flags set and its probability sums added.
A run killed at any point and reopened trains exactly the models whose flag is not set, and
no chunk's sums are ever counted twice (integer sums: the same whatever order chunks arrive
in). Format 1 runs (tailscope 0.1) have only the correct and margin rows and a memory-mapped
``done.npy``; they load, estimate and train.

Only the process holding ``train.lock`` writes rows (an ``flock``: the kernel releases it when
its process dies, so a killed trainer never leaves a stale lock). Nothing is ever unpickled:
arrays are plain ``.npy``/``.npz`` loaded with ``allow_pickle=False``; every file is written
through :func:`atomic_write`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from tailscope.engine import PROB_UNIT, ROW_DTYPES, ModelOutputs
from tailscope.errors import DataError, RunBusyError, RunStoreError
from tailscope.plan import SubsetPlan
from tailscope.spec import RunSpec

__all__ = ["RESULTS", "RunStore", "atomic_write"]

SPEC = "spec.json"
MASKS = "masks.npy"
SEEDS = "seeds.npy"
LABELS = "labels.npz"
PROGRESS = "progress.npz"
DONE_V1 = "done.npy"
LOCK = "train.lock"
#: The results a run keeps, by name: JSON records (dicts) and CSV tables (DataFrames).
RESULTS = {
    "stopping": "stopping.json",
    "memorization": "memorization.csv",
    "pairs": "pairs.csv",
    "marginal_utility": "marginal_utility.json",
    "remove_influencers": "remove_influencers.json",
    "agreement": "agreement.json",
    "train_scores": "train_scores.csv",
    "test_scores": "test_scores.csv",
    "lira": "lira.json",
}
#: The per-model rows each store format has.
ROW_KINDS = {1: ("correct", "margin"), 2: tuple(ROW_DTYPES)}


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file so that it is either wholly there or not at all: ``write`` fills a
    temporary file beside ``path``, which is flushed, fsynced and renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda f: np.lib.format.write_array(f, np.ascontiguousarray(array)))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


class RunStore:
    """Read and write one run directory (see the module docstring for the layout).

    Attributes:
        path: the directory. spec: its :class:`RunSpec`. writable: opened for writing.
        masks: (K, n) bool memory-mapped plan; seeds: (K,) int64.
        y_train, y_test, train_index, test_index: labels and source indices.
        done: (K,) bool, the models whose rows are on disk.
    """

    def __init__(self, path: Path, spec: RunSpec, writable: bool) -> None:
        self.path, self.spec, self.writable = path, spec, writable
        self.masks = self._load(MASKS, mmap=True)
        self.seeds = self._load(SEEDS)
        labels = self._load_npz(LABELS)
        self.y_train, self.y_test = labels["y_train"], labels["y_test"]
        self.train_index, self.test_index = labels["train_index"], labels["test_index"]
        k, n = self.masks.shape
        if self.masks.dtype != np.bool_ or len(self.seeds) != k or len(self.y_train) != n:
            raise RunStoreError(f"{path}: masks.npy, seeds.npy and labels.npz do not agree")
        if k != spec.total_models:
            raise RunStoreError(f"{path}: masks.npy has {k} models, spec.json {spec.total_models}")
        mode = "r+" if writable else "r"
        self._rows: dict[str, np.ndarray] = {}
        for kind in ROW_KINDS[spec.format]:
            for split, width in (("train", n), ("test", len(self.y_test))):
                name = f"{kind}_{split}"
                array = self._load(f"{name}.npy", mmap=True, mode=mode)
                if array.shape != (k, width) or array.dtype != ROW_DTYPES[kind]:
                    raise RunStoreError(
                        f"{path / (name + '.npy')} has shape {array.shape} and dtype "
                        f"{array.dtype}, expected {(k, width)} {np.dtype(ROW_DTYPES[kind])}"
                    )
                self._rows[name] = array
        self._read_progress()

    # ---- creating and opening ------------------------------------------------------------
    @classmethod
    def create(
        cls, path: str | os.PathLike, spec: RunSpec, plan: SubsetPlan, labels: dict
    ) -> RunStore:
        """Create a new run directory; ``labels`` holds y_train, y_test, train_index,
        test_index. Fails if ``path`` already holds a run or is a file."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunStoreError(f"run directory {path} exists and is not a directory")
        if (path / SPEC).exists():
            raise RunStoreError(f"{path} already holds a run; open it instead")
        path.mkdir(parents=True, exist_ok=True)
        k, n = plan.masks.shape
        t = len(labels["y_test"])
        _save_npy(path / MASKS, plan.masks)
        _save_npy(path / SEEDS, plan.seeds)
        _save_npz(path / LABELS, {key: np.asarray(v) for key, v in labels.items()})
        for kind in ROW_KINDS[spec.format]:
            for split, width in (("train", n), ("test", t)):
                np.lib.format.open_memmap(
                    path / f"{kind}_{split}.npy", "w+", dtype=ROW_DTYPES[kind], shape=(k, width)
                )
        c, r = spec.dataset.n_classes, len(spec.ratios)
        _save_npz(
            path / PROGRESS,
            {
                "done": np.zeros(k, dtype=bool),
                "prob_sum_train": np.zeros((r, n, c), dtype=np.int64),
                "prob_sum_test": np.zeros((r, t, c), dtype=np.int64),
            },
        )
        atomic_write(path / SPEC, lambda f: f.write(json.dumps(spec.to_json(), indent=2).encode()))
        return cls(path, spec, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, writable: bool = False) -> RunStore:
        """Open an existing run directory, validating every file."""
        path = Path(path)
        if not path.exists():
            raise RunStoreError(f"run directory {path} does not exist")
        if not path.is_dir():
            raise RunStoreError(f"run directory {path} is not a directory")
        if not (path / SPEC).exists():
            raise RunStoreError(f"{path} is not a tailscope run (no {SPEC})")
        try:
            record = json.loads((path / SPEC).read_text())
        except (OSError, ValueError) as e:
            raise RunStoreError(f"{path / SPEC} is corrupt: {e}") from None
        if not isinstance(record, dict):
            raise RunStoreError(f"{path / SPEC} is corrupt: not a JSON object")
        return cls(path, RunSpec.from_json(record, str(path / SPEC)), writable=writable)

    # ---- file access ---------------------------------------------------------------------
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

    def refresh(self) -> None:
        """Read the done flags and sums again (another process may have trained since)."""
        self._read_progress()

    def _read_progress(self) -> None:
        k = len(self.seeds)
        if self.spec.format == 1:
            self.done = self._load(DONE_V1, mmap=True, mode="r+" if self.writable else "r")
            self._sums = None
        else:
            progress = self._load_npz(PROGRESS)
            self.done = progress.pop("done")
            # One ratio's sums may be stored without the ratio axis (the first format-2 runs).
            self._sums = {k: v if v.ndim == 3 else v[None] for k, v in progress.items()}
        if self.done.shape != (k,) or self.done.dtype != np.bool_:
            raise RunStoreError(f"{self.path}: the done flags are corrupt ({self.done.shape})")

    # ---- results -------------------------------------------------------------------------
    def result_path(self, name: str) -> Path:
        if name not in RESULTS:
            raise DataError(f"unknown result {name!r}; results are {sorted(RESULTS)}")
        return self.path / RESULTS[name]

    def save_result(self, name: str, value: dict | pd.DataFrame) -> Path:
        """Atomically write the result ``name``: a dict as JSON, a DataFrame as CSV."""
        if not self.writable:
            raise RunStoreError(f"{self.path} was opened read-only")
        path = self.result_path(name)
        if isinstance(value, pd.DataFrame):
            text = value.to_csv(index=False)
        else:
            text = json.dumps(value, indent=2)
        atomic_write(path, lambda f: f.write(text.encode()))
        return path

    def load_result(self, name: str) -> dict | pd.DataFrame | None:
        """The result ``name``, or None if it has not been saved."""
        path = self.result_path(name)
        if not path.exists():
            return None
        try:
            if path.suffix == ".csv":
                return pd.read_csv(path)
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RunStoreError(f"{path} is corrupt: {e}") from None

    # ---- progress ------------------------------------------------------------------------
    @property
    def n_models(self) -> int:
        return self.masks.shape[0]

    @property
    def n_finished(self) -> int:
        return int(np.count_nonzero(self.done))

    def finished(self) -> np.ndarray:
        """Indices of the models whose rows are on disk."""
        return np.flatnonzero(np.asarray(self.done))

    def has_rows(self, kind: str) -> bool:
        """Whether this run's format records the rows ``kind`` (phi and predicted: 2+)."""
        return kind in ROW_KINDS[self.spec.format]

    def rows(self, name: str, models: np.ndarray | None = None) -> np.ndarray:
        """Rows ``name`` (e.g. ``"correct_train"``) of ``models`` (default: every finished
        model), as the memory map itself when that is every model, else a copy."""
        if name not in self._rows:
            raise RunStoreError(
                f"{self.path} (store format {self.spec.format}) has no {name} rows; "
                "runs created by tailscope 0.1 record only correctness and margins"
            )
        models = self.finished() if models is None else np.asarray(models)
        array = self._rows[name]
        return array if len(models) == self.n_models else array[models]

    def oos_probabilities(self, ratio: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-sample class probabilities from the finished models of one subset ratio
        (the only one by default): train (n, C), the mean softmax over the models that held
        each example out; test (t, C), over all of them. NaN rows where no finished model
        held the example out."""
        if self._sums is None:
            raise RunStoreError(
                f"{self.path} (store format 1) did not record class probabilities; "
                "retrain it with this tailscope to get them"
            )
        ratios = self.spec.ratios
        if ratio is None and len(ratios) > 1:
            raise DataError(f"{self.path} has the ratios {list(ratios)}: name one")
        group = 0 if ratio is None else ratios.index(ratio)
        first = group * self.spec.n_models
        models = first + np.flatnonzero(np.asarray(self.done)[first : first + self.spec.n_models])
        held_out = len(models) - self.masks[models].sum(axis=0, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            train = self._sums["prob_sum_train"][group] * PROB_UNIT / held_out[:, None]
            test = self._sums["prob_sum_test"][group] * PROB_UNIT / len(models)
        return train, test

    def write(self, models: Sequence[int], outputs: ModelOutputs) -> None:
        """Write the rows of ``models`` (one chunk's :class:`ModelOutputs`), then commit
        them: the done flags and the chunk's probability sums, in one atomic step."""
        if not self.writable:
            raise RunStoreError(f"{self.path} was opened read-only")
        idx = np.asarray(models, dtype=np.int64)
        if np.asarray(self.done)[idx].any():
            raise RunStoreError(f"{self.path}: models {idx.tolist()} are already written")
        for name, array in self._rows.items():
            array[idx] = getattr(outputs, name)
        for array in self._rows.values():
            array.flush()
        if self._sums is None:  # format 1: the memory-mapped flags are the commit
            self.done[idx] = True
            self.done.flush()
            return
        done = self.done.copy()
        done[idx] = True
        group = idx // self.spec.n_models  # the chunk's subset ratio (plans are ratio-major)
        if np.any(group != group[0]):
            raise RunStoreError(f"models {idx.tolist()} are of several subset ratios")
        sums = {name: value.copy() for name, value in self._sums.items()}
        sums["prob_sum_train"][group[0]] += outputs.prob_sum_train
        sums["prob_sum_test"][group[0]] += outputs.prob_sum_test
        _save_npz(self.path / PROGRESS, {"done": done, **sums})
        self.done, self._sums = done, sums

    # ---- one trainer at a time -----------------------------------------------------------
    @contextlib.contextmanager
    def trainer_lock(self) -> Iterator[None]:
        """Hold the run's trainer lock; :class:`RunBusyError` ("RUN is being trained by pid
        N on HOST") if another process (or another trainer in this one) holds it."""
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            holder = _try_lock(fd)
            if holder is not None:
                raise RunBusyError(f"{self.path} is being trained by {holder}")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def trainer(self) -> str | None:
        """``"pid N on HOST"`` of the process training the run now, or None."""
        if not (self.path / LOCK).exists():
            return None
        fd = os.open(self.path / LOCK, os.O_RDONLY)
        try:
            holder = _try_lock(fd)
            if holder is None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            return holder
        finally:
            os.close(fd)


def _try_lock(fd: int) -> str | None:
    """Take the exclusive lock on ``fd`` (None), or say who holds it ("pid N on HOST")."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return None
    except OSError:
        words = os.pread(fd, 200, 0).decode(errors="replace").split()
        pid, host = [*words, "?", "?"][:2]
        return f"pid {pid} on {host}"


def labels_of(data) -> dict[str, np.ndarray]:
    """The ``labels.npz`` arrays of a dataset."""
    return {
        "y_train": data.y_train,
        "y_test": data.y_test,
        "train_index": data.train_index,
        "test_index": data.test_index,
    }
