"""Run: a spec, its store, and the algorithm that fills and reads them.

This is the object most users hold::

    run = ts.Run.create("runs/mnist-mlp", "mnist", model="mlp", n_models=2000, seed=0)
    run.train()            # resumable: trains only the chunks whose rows are not yet on disk
    est = run.estimate()   # memorization, SEs, high-influence pairs

The Run turns its spec into jobs (which models, with which subsets and seeds) and hands them
to an executor (local, Ray): for the initial K models, for every adaptive round, and for the
retraining experiments alike (:meth:`Run.retrain`), each honouring the run's recipe,
precision and models per step. Only the Run writes to its store, under the store's trainer
lock; executors know nothing of runs or experiments.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tailscope._checks import check_scalar
from tailscope.data import Dataset, features, load, load_source
from tailscope.engine import ModelOutputs
from tailscope.errors import DataError, RunStoreError, SpecMismatchError
from tailscope.estimate import Estimates
from tailscope.execute import Executor, TrainingJob, get_executor
from tailscope.models import Recipe, get_recipe
from tailscope.plan import SubsetPlan, check_ratios
from tailscope.spec import RunSpec
from tailscope.stopping import Progress, StoppingRule, max_models, until_se
from tailscope.store import RESULTS, RunStore, labels_of

__all__ = ["Run", "RunStatus"]


class Run:
    """A run directory together with the dataset and recipe that fill it."""

    def __init__(self, store: RunStore, dataset: Dataset | None, recipe: Recipe | None) -> None:
        self.store = store
        self._dataset = dataset
        self._recipe = recipe

    # ---- creating and opening ------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        data: Dataset | str | os.PathLike,
        model: str | Recipe = "mlp",
        *,
        n_models: int = 2000,
        ratio: float | tuple[float, ...] = 0.7,
        seed: int = 0,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        scaling: str = "auto",
        models_per_step: int | None = None,
        precision: str = "auto",
        device: str = "cpu",
    ) -> Run:
        """Create a run, or reopen it if ``path`` already holds a run with this same spec.

        Args:
            path: the run directory (created if missing).
            data: a :class:`Dataset` or a name/path for :func:`tailscope.datasets.load`.
            model: a built-in recipe name (``"mlp"``, ``"cnn"``) or a :class:`Recipe`.
            n_models: K, the number of models (>= 2) of each subset ratio.
            ratio: subset size m / n in (0, 1), m = round(ratio * n); or several ratios
                (e.g. ``(0.1, 0.2, ..., 0.9)`` for C-scores), ``n_models`` models each.
            seed: seeds the subset plan and every model's training.
            epochs, batch_size, lr: overrides of the built-in recipe's hyper-parameters.
            scaling: feature scaling (see :mod:`tailscope.data.features`).
            models_per_step: models trained together in one vectorized step, fixed per run
                so that a resumed run trains exactly the same chunks. Default: 16 on a CPU,
                128 on a GPU (``device``).
            precision: ``"auto"`` (bf16 where ``device`` multiplies bfloat16 natively: a CPU
                with AVX512-BF16 or AMX, a CUDA GPU with bf16; else fp32), ``"fp32"``, or
                ``"bf16"`` matrix products with float32 master weights. Resolved once, here,
                and recorded; reopening with ``"auto"`` keeps the stored value.
            device: the torch device the run will train on (and :meth:`train`'s default).

        Raises:
            SpecMismatchError: ``path`` holds a run created with a different spec.
        """
        data = load(data) if isinstance(data, str | os.PathLike) else data
        if not isinstance(data, Dataset):
            raise DataError(f"data must be a Dataset or a dataset name, got {type(data)!r}")
        recipe = _resolve_recipe(model, epochs=epochs, batch_size=batch_size, lr=lr)
        path = Path(path)
        existing = RunStore.open(path, writable=True) if (path / "spec.json").exists() else None
        if existing is not None:  # what was resolved at creation is not asked again
            stored = existing.spec
            precision = stored.precision if precision == "auto" else precision
            models_per_step = models_per_step or stored.models_per_step
        spec = RunSpec.new(
            data,
            recipe,
            n_models=n_models,
            ratio=ratio,
            seed=seed,
            models_per_step=models_per_step,
            precision=precision,
            device=device,
            scaling=scaling,
        )
        if existing is not None:
            _fail_on_differences(path, existing.spec.differences(spec))
            return cls(existing, data, recipe)
        plan = SubsetPlan.random(spec.n_models, data.n_train, spec.ratios, spec.seed)
        return cls(RunStore.create(path, spec, plan, labels_of(data)), data, recipe)

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
        run = cls(RunStore.open(path, writable=writable), data, model)
        if data is not None:
            run.check_settings(dataset=data)
        if model is not None:
            run.check_settings(recipe=model)
        return run

    def check_settings(self, **given: object) -> None:
        """Fail with one line naming the stored and the given value of every setting in
        ``given`` that differs from this run's: ``n_models``, ``ratio``, ``seed``,
        ``models_per_step``, ``precision`` (``"auto"`` never differs), ``model`` (a recipe
        name), ``recipe`` (a :class:`Recipe`), ``epochs``, ``batch_size``, ``lr``,
        ``dataset`` (a :class:`Dataset`); None means "not given"."""
        spec, diffs = self.spec, []

        def differ(name: str, stored: object, value: object) -> None:
            if value is not None and stored != value:
                diffs.append(f"{name}: stored {stored!r}, given {value!r}")

        for name, value in given.items():
            if name in ("n_models", "seed", "models_per_step"):
                differ(name, getattr(spec, name), value)
            elif name == "ratio":
                differ("ratio", spec.ratios, None if value is None else check_ratios(value))
            elif name == "precision":
                differ(name, spec.precision, None if value == "auto" else value)
            elif name == "model":
                differ("model", spec.recipe["name"], value)
            elif name in ("epochs", "batch_size", "lr"):
                differ(name, spec.recipe[name], value)
            elif name == "recipe":
                if value is not None and value.to_spec() != spec.recipe:
                    diffs.append(f"recipe: stored {spec.recipe!r}, given {value.to_spec()!r}")
            elif name == "dataset":
                differ("dataset hash", spec.dataset.hash, getattr(value, "content_hash", None))
            else:
                raise DataError(f"unknown setting {name!r}")
        _fail_on_differences(self.path, diffs)

    # ---- what the run is -----------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def spec(self) -> RunSpec:
        return self.store.spec

    @property
    def precision(self) -> str:
        """``"fp32"`` or ``"bf16"``, as resolved when the run was created."""
        return self.spec.precision

    @property
    def n_models(self) -> int:
        """K, the models of every ratio."""
        return self.store.n_models

    @property
    def n_finished(self) -> int:
        return self.store.n_finished

    @property
    def plan(self) -> SubsetPlan:
        """The run's subset plan (masks memory-mapped)."""
        ratios = np.repeat(self.spec.ratios, self.spec.n_models)
        return SubsetPlan(self.store.masks, self.store.seeds, ratios)

    @property
    def dataset(self) -> Dataset:
        """The run's dataset, reloaded from its recorded source on first use."""
        if self._dataset is None:
            source = self.spec.dataset.source
            if source.get("kind") == "arrays":
                raise DataError(
                    f"{self.path} was trained on in-memory arrays; pass them again with "
                    "Run.open(path, data=ts.datasets.from_arrays(...))"
                )
            data = load_source(source)
            self.check_settings(dataset=data)
            self._dataset = data
        return self._dataset

    @property
    def recipe(self) -> Recipe:
        """The run's recipe, rebuilt from the spec for built-in recipes."""
        if self._recipe is None:
            spec = dict(self.spec.recipe)
            name = spec.pop("name")
            try:
                recipe = get_recipe(name, **spec)
            except DataError:
                raise DataError(
                    f"{self.path} uses the custom recipe {name!r}; pass it again with "
                    "Run.open(path, model=recipe)"
                ) from None
            self.check_settings(recipe=recipe)
            self._recipe = recipe
        return self._recipe

    def __repr__(self) -> str:
        return (
            f"Run({str(self.path)!r}, dataset={self.spec.dataset.name!r}, "
            f"recipe={self.spec.recipe['name']!r}, models={self.n_finished}/{self.n_models}, "
            f"precision={self.precision!r})"
        )

    # ---- training ------------------------------------------------------------------------
    def chunks(self) -> list[np.ndarray]:
        """The fixed chunks of models (``models_per_step`` each) that still need training."""
        return self.plan.chunks(self.spec.models_per_step, todo=~np.asarray(self.store.done))

    def train(
        self,
        *,
        executor: str | Executor = "local",
        device: str | None = None,
        progress: bool = True,
        stop: StoppingRule | None = None,
        until_se: float | None = None,
        quantile: float = 0.95,
        max_models: int | None = None,
        min_models: int = 32,
        check_every: int | None = None,
        **executor_options: object,
    ) -> Run:
        """Train the unfinished models; each chunk's rows are committed as soon as it ends.

        Interrupting (Ctrl-C, a kill) loses at most the chunks in flight; calling ``train``
        again, in this or a new process, picks up where it stopped. One process trains a run
        at a time: a second gets :class:`~tailscope.errors.RunBusyError`.

        Args:
            executor: ``"local"`` (in this process), ``"ray"``, or an :class:`Executor`.
            device: torch device the models train on (default: the run's).
            progress: show a progress bar.
            stop: a stopping rule (:mod:`tailscope.stopping`), e.g.
                ``until_se(0.03) | max_models(4000)``; the models are then trained in
                rounds, in plan order, and the rule is checked before every round.
            until_se, quantile, min_models, max_models: shorthands that build ``stop``
                (``until_se(until_se, quantile, min_models) | max_models(max_models)``).
            check_every: models per round between checks (default: 4 chunks).
            executor_options: passed to the executor named by ``executor`` (for
                ``"ray"``: ``address``, ... of :class:`~tailscope.execute.ray.RayExecutor`).

        Why it stopped is recorded (:attr:`stopping`: ``reason`` se_target, max_models or
        all_models, and what the rule measured).
        """
        if not self.store.writable:
            raise RunStoreError(f"{self.path} was opened read-only")
        if max_models is not None and not 2 <= max_models <= self.n_models:
            raise DataError(
                f"max_models must be in [2, {self.n_models}] (the run's models), got {max_models}"
            )
        rule = _stopping_rule(stop, until_se, quantile, min_models, max_models)
        if rule is not None and len(self.spec.ratios) > 1:
            raise DataError("stopping rules apply to runs of one subset ratio")
        limit = self.n_models if rule is None else min(rule.limit(), self.n_models)
        with self.store.trainer_lock():
            self.store.refresh()  # another trainer may have finished models since we opened
            chunks = [c for c in self.chunks() if c[0] < limit]
            step = self.spec.models_per_step
            per_round = max(1, (check_every or 4 * step) // step) if rule else len(chunks) or 1
            rounds = [chunks[i : i + per_round] for i in range(0, len(chunks), per_round)]
            runner = get_executor(executor, **executor_options) if chunks else None
            job = self._job(self._masks_and_seeds(), device) if chunks else None
            session = getattr(runner, "session", None)  # set-up shared by all rounds
            verdict = None
            with (
                session(job) if session is not None else contextlib.nullcontext(),
                tqdm(
                    total=int(limit),
                    initial=min(self.n_finished, int(limit)),
                    desc=f"training {self.spec.recipe['name']} ({self.precision})",
                    unit="model",
                    disable=not progress or not chunks,
                    dynamic_ncols=True,
                ) as bar,
            ):
                for todo in [*rounds, []]:
                    if rule is not None:
                        verdict = rule.check(self._progress())
                        if verdict.stop:
                            break
                    if todo:
                        runner.run(job, todo, self.store.write, progress=bar.update)
            finished = self.n_finished
            if verdict is not None and verdict.stop and finished < self.n_models:
                reason = verdict.reason
            else:
                reason = "all_models" if finished == self.n_models else "max_models"
            record = verdict.record() if verdict is not None else {}
            self.store.save_result("stopping", {**record, "reason": reason, "models": finished})
        return self

    def retrain(
        self,
        masks: np.ndarray,
        seeds: np.ndarray,
        *,
        executor: str | Executor = "local",
        device: str | None = None,
        progress: bool = False,
        **executor_options: object,
    ) -> ModelOutputs:
        """Train models on any subsets with the run's recipe, precision and models per step,
        through ``executor``, and return their outputs (in the order of ``masks``); nothing
        is written to the run. ``masks`` (R, n) bool, ``seeds`` (R,); models with subsets
        of the same size share chunks. What the retraining experiments call."""
        masks = np.asarray(masks, dtype=bool)
        seeds = np.asarray(seeds, dtype=np.int64)
        if masks.ndim != 2 or masks.shape[1] != self.spec.dataset.n_train:
            raise DataError(
                f"masks must be (n_models, {self.spec.dataset.n_train}) bool, got {masks.shape}"
            )
        plan = SubsetPlan(masks, seeds, masks.sum(axis=1) / masks.shape[1])
        chunks = plan.chunks(self.spec.models_per_step)
        parts: dict[int, ModelOutputs] = {}
        with tqdm(total=len(masks), unit="model", desc="retraining", disable=not progress) as bar:
            get_executor(executor, **executor_options).run(
                self._job((masks, seeds), device),
                chunks,
                lambda models, outputs: parts.update({int(models[0]): outputs}),
                progress=bar.update,
            )
        order = np.concatenate(chunks)
        joined = ModelOutputs.concatenate([parts[int(c[0])] for c in chunks])
        return joined.select(np.argsort(order))

    def _masks_and_seeds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.store.masks), np.asarray(self.store.seeds)

    def _job(self, plan: tuple[np.ndarray, np.ndarray], device: str | None) -> TrainingJob:
        data = self.dataset
        x_train, x_test = features(data, self.spec.dataset.scaling)
        masks, seeds = plan
        return TrainingJob(
            recipe=self.recipe,
            x_train=x_train,
            y_train=data.y_train,
            x_test=x_test,
            y_test=data.y_test,
            n_classes=self.spec.dataset.n_classes,
            masks=masks,
            seeds=seeds,
            device=self.spec.device if device is None else device,
            precision=self.precision,
        )

    def _progress(self) -> Progress:
        models = self.store.finished()
        return Progress(self.store.masks[models], self.store.rows("correct_train", models))

    @property
    def stopping(self) -> dict | None:
        """Why the last :meth:`train` stopped (``reason``: se_target, max_models,
        all_models), with what its rule measured; None before any training."""
        return self.store.load_result("stopping")

    # ---- estimation ----------------------------------------------------------------------
    def models_of(self, ratio: float | None = None) -> np.ndarray:
        """The finished models of one subset ratio (default: the run's analysis ratio: the
        only one, or 0.7 in a multi-ratio run)."""
        spec = self.spec
        if ratio is None:
            ratio = spec.analysis_ratio
            if ratio is None:
                raise DataError(
                    f"{self.path} has the ratios {list(spec.ratios)} and no 0.7: name one"
                )
        ratio = check_scalar(ratio, "ratio", float)
        if ratio not in spec.ratios:
            raise DataError(f"{self.path} has no models of ratio {ratio}; it has {spec.ratios}")
        first = spec.ratios.index(ratio) * spec.n_models
        models = np.arange(first, first + spec.n_models)
        return models[np.asarray(self.store.done)[models]]

    def estimate(self, ratio: float | None = None) -> Estimates:
        """Estimates from the finished models of one subset ratio (see :meth:`models_of`);
        a partly trained run can be estimated."""
        models = self.models_of(ratio)
        if len(models) < 2:
            raise DataError(
                f"{self.path} has {len(models)} finished models; need at least 2 to estimate"
            )
        store = self.store
        return Estimates(
            store.masks if len(models) == store.n_models else store.masks[models],
            store.rows("correct_train", models),
            store.rows("correct_test", models),
            store.y_train,
            store.y_test,
            store.train_index,
            store.test_index,
        )

    def status(self) -> RunStatus:
        """Where the run stands: its spec, models finished per ratio, precision, why
        training last stopped, which results it holds, and whether it is training now."""
        done = np.asarray(self.store.done)
        n = self.spec.n_models
        per_ratio = {
            r: int(done[i * n : (i + 1) * n].sum()) for i, r in enumerate(self.spec.ratios)
        }
        results = [name for name in RESULTS if self.store.result_path(name).exists()]
        return RunStatus(
            self.path, self.spec, per_ratio, self.stopping, results, self.store.trainer()
        )


@dataclass(frozen=True)
class RunStatus:
    """What :meth:`Run.status` reports."""

    path: Path
    spec: RunSpec
    finished_per_ratio: dict[float, int]
    stopping: dict | None
    results: list[str]
    trainer: str | None

    def lines(self) -> list[str]:
        spec, recipe = self.spec, dict(self.spec.recipe)
        name = recipe.pop("name")
        data = spec.dataset
        finished = sum(self.finished_per_ratio.values())
        out = [
            f"run {self.path} (format {spec.format}, tailscope {spec.version})",
            f"dataset {data.name}: {data.n_train} train / {data.n_test} test, {data.n_classes} "
            f"classes, hash {data.hash[:12]}, scaling {data.scaling}",
            f"recipe {name}: " + ", ".join(f"{k}={v}" for k, v in recipe.items()),
            f"models {finished}/{spec.total_models} finished"
            + "".join(
                f"; ratio {r:g}: {d}/{spec.n_models}" for r, d in self.finished_per_ratio.items()
            ),
            f"precision {spec.precision}, {spec.models_per_step} models per step, seed "
            f"{spec.seed}, created for {spec.device}",
        ]
        if self.stopping:
            measured = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in self.stopping.items()
                if k != "reason" and v is not None
            )
            out.append(f"last training stopped: {self.stopping.get('reason')} ({measured})")
        out.append("results: " + (", ".join(self.results) or "none yet"))
        if self.trainer:
            out.append(f"being trained now by {self.trainer}")
        return out


def _resolve_recipe(model: str | Recipe, **overrides: object) -> Recipe:
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(model, Recipe):
        if overrides:
            raise DataError(
                f"pass a Recipe or hyper-parameter overrides, not both ({', '.join(overrides)})"
            )
        return model
    return get_recipe(model, **overrides)


def _stopping_rule(
    stop: StoppingRule | None,
    se: float | None,
    quantile: float,
    min_models: int,
    limit: int | None,
) -> StoppingRule | None:
    rules = [r for r in (stop,) if r is not None]
    if se is not None:
        rules.append(until_se(se, quantile=quantile, min_models=min_models))
    if limit is not None:
        rules.append(max_models(limit))
    if not rules:
        return None
    rule = rules[0]
    for other in rules[1:]:
        rule = rule | other
    return rule


def _fail_on_differences(path: Path, diffs: list[str]) -> None:
    if diffs:
        raise SpecMismatchError(f"{path} was created with other settings: " + "; ".join(diffs))
