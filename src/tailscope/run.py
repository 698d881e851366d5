"""Run: a dataset, a recipe and a subset plan, trained into a run store and estimated.

This is the object most users hold::

    run = ts.Run.create("runs/mnist-mlp", "mnist", model="mlp", n_models=2000, seed=0)
    run.train()            # resumable: trains only models whose rows are not yet on disk
    est = run.estimate()   # memorization, SEs, high-influence pairs
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tailscope import __version__
from tailscope.data import Dataset, features, load, load_source, resolve_scaling
from tailscope.engine.precision import resolve_precision
from tailscope.errors import DataError, RunStoreError, SpecMismatchError
from tailscope.execute import Executor, TrainingJob, get_executor
from tailscope.models import Recipe, get_recipe
from tailscope.plan import SubsetPlan, check_ratio, subset_size
from tailscope.results import Estimates
from tailscope.stopping import StandardErrorTarget
from tailscope.store import RunStore

__all__ = ["Run"]

#: Models trained together in one vectorized step unless the run says otherwise.
DEFAULT_MODELS_PER_STEP = 16


def _resolve_recipe(model: str | Recipe, **overrides: object) -> Recipe:
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(model, Recipe):
        if overrides:
            raise DataError(
                f"pass a Recipe or hyper-parameter overrides, not both ({', '.join(overrides)})"
            )
        return model
    return get_recipe(model, **overrides)


def _dataset_spec(data: Dataset, scaling: str) -> dict:
    return {
        "name": data.name,
        "hash": data.content_hash,
        "n_train": data.n_train,
        "n_test": data.n_test,
        "n_classes": data.n_classes,
        "class_names": list(data.class_names),
        "feature_shape": list(data.feature_shape),
        "source": data.source,
        "scaling": resolve_scaling(data, scaling),
    }


class Run:
    """A run directory together with the dataset and recipe that fill it."""

    def __init__(self, store: RunStore, dataset: Dataset | None, recipe: Recipe | None) -> None:
        self.store = store
        self._dataset = dataset
        self._recipe = recipe

    # ---- creating and opening ----------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        data: Dataset | str,
        model: str | Recipe = "mlp",
        *,
        n_models: int = 2000,
        ratio: float = 0.7,
        seed: int = 0,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        scaling: str = "auto",
        models_per_step: int = DEFAULT_MODELS_PER_STEP,
        precision: str = "auto",
        device: str = "cpu",
    ) -> Run:
        """Create a run, or reopen it if ``path`` already holds a run with this same spec.

        Args:
            path: the run directory (created if missing).
            data: a :class:`Dataset` or a name/path for :func:`tailscope.datasets.load`.
            model: a built-in recipe name (``"mlp"``, ``"cnn"``) or a :class:`Recipe`.
            n_models: K, the number of models (>= 2).
            ratio: subset size m / n, in (0, 1); m = round(ratio * n).
            seed: seeds the subset plan and every model's training.
            epochs, batch_size, lr: overrides of the built-in recipe's hyper-parameters.
            scaling: feature scaling (see :mod:`tailscope.data.features`).
            models_per_step: models trained together in one vectorized step; fixed per run
                so that a resumed run trains exactly the same chunks, each model beside the
                same companions. 16 suits a CPU; a GPU keeps gaining up to ~128 (what the
                command line picks with ``--device cuda``).
            precision: ``"auto"`` (bf16 where ``device`` multiplies bfloat16 natively: a CPU
                with AVX512-BF16 or AMX, a CUDA GPU with bf16; else fp32), ``"fp32"``, or
                ``"bf16"`` matrix products with float32 master weights. Resolved once, here,
                and recorded in the spec; reopening with ``"auto"`` keeps the stored value.
            device: the torch device the run will train on, for resolving ``"auto"``.

        Raises:
            SpecMismatchError: ``path`` holds a run created with a different spec.
        """
        data = load(data) if isinstance(data, str | os.PathLike) else data
        if not isinstance(data, Dataset):
            raise DataError(f"data must be a Dataset or a dataset name, got {type(data)!r}")
        recipe = _resolve_recipe(model, epochs=epochs, batch_size=batch_size, lr=lr)
        ratio = check_ratio(ratio)
        if isinstance(n_models, bool) or not isinstance(n_models, int | np.integer):
            raise DataError(f"n_models must be an integer, got {n_models!r}")
        if n_models < 2:
            raise DataError(f"n_models must be at least 2, got {n_models}")
        if not isinstance(models_per_step, int | np.integer) or models_per_step < 1:
            raise DataError(f"models_per_step must be a positive integer, got {models_per_step}")
        path = Path(path)
        stored = _stored_spec(path)
        if precision == "auto" and stored is not None:
            precision = stored.get("precision", "fp32")  # resolved when it was created
        spec = {
            "format": 1,
            "version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "dataset": _dataset_spec(data, scaling),
            "recipe": recipe.to_spec(),
            "n_models": int(n_models),
            "ratio": ratio,
            "subset_size": subset_size(data.n_train, ratio),
            "seed": int(seed),
            "models_per_step": int(models_per_step),
            "precision": resolve_precision(precision, device),
        }
        if path.exists() and not path.is_dir():
            raise RunStoreError(f"run directory {path} exists and is not a directory")
        if (path / "spec.json").exists():
            store = RunStore.open(path, writable=True)
            store.check_spec(spec)
            return cls(store, data, recipe)
        plan = SubsetPlan.random(n_models, data.n_train, ratio=ratio, random_state=seed)
        labels = {
            "y_train": data.y_train,
            "y_test": data.y_test,
            "train_index": data.train_index,
            "test_index": data.test_index,
        }
        return cls(RunStore.create(path, spec, plan, labels), data, recipe)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        data: Dataset | None = None,
        model: Recipe | None = None,
        *,
        writable: bool = True,
    ) -> Run:
        """Open an existing run. Training it needs its dataset and recipe: built-in datasets
        and recipes are reloaded from the spec; pass ``data``/``model`` for your own (they
        are checked against the spec)."""
        store = RunStore.open(path, writable=writable)
        run = cls(store, data, model)
        if data is not None:
            _check_same(store, "dataset.hash", store.spec["dataset"]["hash"], data.content_hash)
        if model is not None:
            store.check_spec({**store.spec, "recipe": model.to_spec()})
        return run

    # ---- what the run is ---------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def spec(self) -> dict:
        return self.store.spec

    @property
    def dataset(self) -> Dataset:
        """The run's dataset, reloaded from its recorded source on first use."""
        if self._dataset is None:
            source = self.spec["dataset"]["source"]
            if source.get("kind") == "arrays":
                raise DataError(
                    f"{self.path} was trained on in-memory arrays; pass them again with "
                    "Run.open(path, data=ts.datasets.from_arrays(...))"
                )
            data = load_source(source)
            _check_same(self.store, "dataset.hash", self.spec["dataset"]["hash"], data.content_hash)
            self._dataset = data
        return self._dataset

    @property
    def recipe(self) -> Recipe:
        """The run's recipe, rebuilt from the spec for built-in recipes."""
        if self._recipe is None:
            spec = dict(self.spec["recipe"])
            name = spec.pop("name")
            try:
                self._recipe = get_recipe(name, **spec)
            except DataError:
                raise DataError(
                    f"{self.path} uses the custom recipe {name!r}; pass it again with "
                    "Run.open(path, model=recipe)"
                ) from None
            _check_same(self.store, "recipe", self.spec["recipe"], self._recipe.to_spec())
        return self._recipe

    @property
    def n_models(self) -> int:
        return self.store.n_models

    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"``, as resolved when the run was created."""
        return self.spec.get("precision", "fp32")

    @property
    def n_finished(self) -> int:
        return int(np.count_nonzero(self.store.done))

    def __repr__(self) -> str:
        return (
            f"Run({str(self.path)!r}, dataset={self.spec['dataset']['name']!r}, "
            f"recipe={self.spec['recipe']['name']!r}, "
            f"models={self.n_finished}/{self.n_models})"
        )

    # ---- training ----------------------------------------------------------------------
    def chunks(self) -> list[np.ndarray]:
        """The fixed chunks of models (``models_per_step`` each) that still need training.

        A chunk is retrained whole if any of its models is unfinished, so every model is
        always trained beside the same companions and a resumed run reproduces an
        uninterrupted one exactly.
        """
        step = int(self.spec["models_per_step"])
        done = np.asarray(self.store.done)
        out = []
        for start in range(0, self.n_models, step):
            models = np.arange(start, min(start + step, self.n_models))
            if not done[models].all():
                out.append(models)
        return out

    def train(
        self,
        *,
        executor: str | Executor = "local",
        device: str = "cpu",
        progress: bool = True,
        until_se: float | None = None,
        quantile: float = 0.95,
        max_models: int | None = None,
        min_models: int = 32,
        check_every: int | None = None,
        **executor_options: object,
    ) -> Run:
        """Train the unfinished models; each chunk's rows are flushed as soon as it ends.

        Interrupting (Ctrl-C, a kill) loses at most the chunks in flight; calling ``train``
        again, in this or a new process, picks up where it stopped.

        With ``until_se`` the models are trained in rounds, in plan order, and training
        stops once the ``quantile`` of the memorization SEs is at most ``until_se`` (see
        :class:`~tailscope.stopping.StandardErrorTarget`), or at ``max_models``. Why it
        stopped is recorded in ``stopping.json`` (:attr:`stopping`).

        Args:
            executor: ``"local"`` (in this process) or an :class:`Executor` object.
            device: torch device the models train on.
            progress: show a progress bar.
            until_se: target SE of memorization; None trains every model of the plan.
            quantile: the quantile of the n SEs that must reach ``until_se``.
            max_models: train at most this many models (at most the run's ``n_models``).
            min_models: never stop on the SE rule with fewer finished models.
            check_every: models per round between checks (default: 4 chunks).
            executor_options: passed to the executor named by ``executor`` (for
                ``"ray"``: see :class:`~tailscope.execute.ray.RayExecutor`).
        """
        if not self.store.writable:
            raise RunStoreError(f"{self.path} was opened read-only")
        limit = self.n_models if max_models is None else int(max_models)
        if not 2 <= limit <= self.n_models:
            raise DataError(
                f"max_models must be in [2, {self.n_models}] (the run's n_models), got {limit}"
            )
        target = (
            None
            if until_se is None
            else StandardErrorTarget(until_se, quantile=quantile, min_models=min_models)
        )
        chunks = [c for c in self.chunks() if c[0] < limit]
        step = int(self.spec["models_per_step"])
        per_round = max(1, (check_every or 4 * step) // step) if target else len(chunks) or 1
        rounds = [chunks[i : i + per_round] for i in range(0, len(chunks), per_round)]

        record: dict[str, object] = {}
        job = self._job(device) if chunks else None
        runner = get_executor(executor, **executor_options) if chunks else None
        session = getattr(runner, "session", None)  # set-up shared by all rounds
        with (
            session(job) if session is not None else contextlib.nullcontext(),
            tqdm(
                total=limit,
                initial=min(self.n_finished, limit),
                desc=f"training {self.spec['recipe']['name']} ({self.precision})",
                unit="model",
                disable=not progress or not chunks,
                dynamic_ncols=True,
            ) as bar,
        ):
            for todo in [*rounds, []]:
                if target is not None:
                    record = self._check_target(target)
                    if record["se_quantile"] is not None:
                        bar.set_postfix(se=f"{record['se_quantile']:.3f}", refresh=False)
                    if record["reached"]:
                        break
                if todo:
                    runner.run(job, todo, self.store.write, progress=bar.update)
        finished = self.n_finished
        if record.get("reached"):
            reason = "se_target"
        else:
            reason = "all_models" if finished == self.n_models else "max_models"
        self.store.write_json("stopping.json", {**record, "reason": reason, "models": finished})
        return self

    def _job(self, device: str) -> TrainingJob:
        data = self.dataset
        x_train, x_test = features(data, self.spec["dataset"]["scaling"])
        return TrainingJob(
            recipe=self.recipe,
            x_train=x_train,
            y_train=data.y_train,
            x_test=x_test,
            y_test=data.y_test,
            masks=np.asarray(self.store.masks),
            seeds=np.asarray(self.store.seeds),
            device=device,
            precision=self.precision,
        )

    def _check_target(self, target: StandardErrorTarget) -> dict[str, object]:
        models = self.store.finished()
        value = target.measure(self.store.masks[models], self.store.read("correct_train", models))
        return {
            "target_se": target.se,
            "quantile": target.quantile,
            "se_quantile": value if np.isfinite(value) else None,  # None: too few models
            "reached": target.reached(value),
        }

    @property
    def stopping(self) -> dict | None:
        """Why the last :meth:`train` stopped (``reason``: se_target, max_models,
        all_models), with the SE quantile it measured; None before any training."""
        return self.store.read_json("stopping.json")

    # ---- estimation --------------------------------------------------------------------
    def estimate(self) -> Estimates:
        """Estimates from every finished model (a partly trained run can be estimated)."""
        if self.n_finished < 2:
            raise DataError(
                f"{self.path} has {self.n_finished} finished models; need at least 2 to estimate"
            )
        return Estimates.from_store(self.store)


def _stored_spec(path: Path) -> dict | None:
    """The spec of the run at ``path``, or None where there is no run yet."""
    if not (path / "spec.json").exists():
        return None
    return RunStore.open(path).spec


def _check_same(store: RunStore, what: str, stored: object, given: object) -> None:
    if stored != given:
        raise SpecMismatchError(
            f"{store.path} was created with a different {what}: stored {stored!r}, given {given!r}"
        )
