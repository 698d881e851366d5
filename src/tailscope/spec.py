"""RunSpec: what a run is, typed and versioned, validated once where it is made.

A run is fixed by its dataset (identified by a content hash), its recipe, the number of
models per subset ratio, the ratios, the seed, the models trained per step (which fixes the
chunks) and the precision (resolved from ``"auto"`` when the run is created). Every default
lives in :meth:`RunSpec.new`; everything downstream reads a validated spec.

``spec.json`` holds :meth:`RunSpec.to_json`. Format 1 (tailscope 0.1: one ``ratio``, no logit
margins, predicted classes or probability sums in the store) still loads.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass

from tailscope import __version__
from tailscope._checks import check_choice, check_scalar
from tailscope.data import Dataset, resolve_scaling
from tailscope.engine import default_models_per_step, resolve_precision
from tailscope.errors import RunStoreError
from tailscope.models import Recipe
from tailscope.plan import check_ratios, subset_size

__all__ = ["SPEC_FORMAT", "DatasetSpec", "RunSpec"]

#: The current format of ``spec.json`` and of the run directory it describes.
SPEC_FORMAT = 2
#: The ratio whose models a multi-ratio run estimates memorization and influence from, when
#: it has one (the paper's m = 0.7 n).
PAPER_RATIO = 0.7


@dataclass(frozen=True)
class DatasetSpec:
    """The identity of a run's dataset and how its features are scaled."""

    name: str
    hash: str
    n_train: int
    n_test: int
    n_classes: int
    class_names: tuple[str, ...]
    feature_shape: tuple[int, ...]
    source: dict
    scaling: str

    @classmethod
    def of(cls, data: Dataset, scaling: str = "auto") -> DatasetSpec:
        return cls(
            name=data.name,
            hash=data.content_hash,
            n_train=data.n_train,
            n_test=data.n_test,
            n_classes=data.n_classes,
            class_names=tuple(data.class_names),
            feature_shape=tuple(data.feature_shape),
            source=dict(data.source),
            scaling=resolve_scaling(data, scaling),
        )


@dataclass(frozen=True)
class RunSpec:
    """A run's specification.

    Attributes:
        dataset: the dataset's identity and scaling.
        recipe: the recipe's name and hyper-parameters (:meth:`Recipe.to_spec`).
        n_models: models per subset ratio.
        ratios: the subset ratios m / n; the plan holds ``n_models`` models of each, ratio by
            ratio.
        seed: seeds the plan and every model's training.
        models_per_step: models trained together in one vectorized step; fixes the chunks.
        precision: ``"fp32"`` or ``"bf16"``, as resolved at creation.
        format: the run directory's format (1 or 2).
        device, version, created: where it was created to train, by which tailscope, when
            (for information; they may differ when the run is reopened).
    """

    dataset: DatasetSpec
    recipe: dict
    n_models: int
    ratios: tuple[float, ...]
    seed: int
    models_per_step: int
    precision: str
    format: int = SPEC_FORMAT
    device: str = "cpu"
    version: str = __version__
    created: str = ""

    #: What identifies a run: reopening with any other value of these is an error.
    IDENTITY = ("dataset", "recipe", "n_models", "ratios", "seed", "models_per_step", "precision")

    @classmethod
    def new(
        cls,
        data: Dataset,
        recipe: Recipe,
        *,
        n_models: int = 2000,
        ratio: float | Sequence[float] = PAPER_RATIO,
        seed: int = 0,
        models_per_step: int | None = None,
        precision: str = "auto",
        device: str = "cpu",
        scaling: str = "auto",
    ) -> RunSpec:
        """Validate the arguments of a new run (each error names its argument) and fill in
        the defaults: ``models_per_step`` from the device (16 on a CPU, 128 on a GPU),
        ``precision="auto"`` resolved for the device."""
        check_choice(scaling, "scaling", ("auto", "unit", "standardize", "none"))
        if models_per_step is None:
            models_per_step = default_models_per_step(device)
        return cls(
            dataset=DatasetSpec.of(data, scaling),
            recipe=recipe.to_spec(),
            n_models=check_scalar(n_models, "n_models", int, min_val=2),
            ratios=check_ratios(ratio),
            seed=check_scalar(seed, "seed", int, min_val=0),
            models_per_step=check_scalar(models_per_step, "models_per_step", int, min_val=1),
            precision=resolve_precision(precision, device),
            device=str(device),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )

    # ---- derived facts -------------------------------------------------------------------
    @property
    def total_models(self) -> int:
        """K: the models of every ratio."""
        return self.n_models * len(self.ratios)

    def subset_size(self, ratio: float) -> int:
        return subset_size(self.dataset.n_train, ratio)

    @property
    def analysis_ratio(self) -> float | None:
        """The ratio memorization and influence are estimated at by default: the only one,
        else 0.7 when present, else None (the caller must name one)."""
        if len(self.ratios) == 1:
            return self.ratios[0]
        return PAPER_RATIO if PAPER_RATIO in self.ratios else None

    # ---- comparing -----------------------------------------------------------------------
    def differences(self, other: RunSpec) -> list[str]:
        """``"name: stored X, requested Y"`` for every identity field that differs."""
        mine, theirs = _identity(self), _identity(other)
        return _differences(mine, theirs)

    # ---- JSON ----------------------------------------------------------------------------
    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, record: object, where: str = "spec.json") -> RunSpec:
        """A spec from ``spec.json``, format 1 or 2; :class:`RunStoreError` naming what is
        wrong when it is not one."""
        try:
            record = dict(record)
            fmt = int(record.get("format", 1))
            if fmt == 1:  # tailscope 0.1: one ratio, precision fp32 unless recorded
                record["ratios"] = [record.pop("ratio")]
                record.pop("subset_size", None)
                record.setdefault("precision", "fp32")
            elif fmt != SPEC_FORMAT:
                raise RunStoreError(f"{where} has format {fmt}; this tailscope reads 1 and 2")
            dataset = dict(record.pop("dataset"))
            dataset["class_names"] = tuple(dataset["class_names"])
            dataset["feature_shape"] = tuple(dataset["feature_shape"])
            record.update(
                dataset=DatasetSpec(**dataset),
                ratios=tuple(float(r) for r in record["ratios"]),
                format=fmt,
            )
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in record.items() if k in fields})
        except RunStoreError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise RunStoreError(f"{where} is not a tailscope run spec ({err!r})") from None


def _identity(spec: RunSpec) -> dict:
    record = spec.to_json()
    return {key: record[key] for key in RunSpec.IDENTITY}


def _differences(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key), requested.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, prefix=f"{name}.")
        elif a != b:
            out.append(f"{name}: stored {a!r}, requested {b!r}")
    return out
