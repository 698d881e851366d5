"""When to stop training: small rules composed with ``|`` (either) and ``&`` (both).

    until_se(0.03, quantile=0.95) | max_models(4000)

A rule looks at the finished models of a run (:class:`Progress`) and answers whether to stop
(:class:`Verdict`, with what it measured), and how many models it allows at most
(:meth:`StoppingRule.limit`), so the run never trains past that.

:func:`until_se` stops once the ``quantile`` of the memorization standard errors over all
train examples is at most ``se``. The plug-in SE ``sqrt(p(1-p)/K)`` is 0 for an example every
model got right, however few models there are, so a rule on plug-in SEs would declare a
handful of models converged; this rule uses add-one (Laplace) smoothed proportions,
``p~ = (hits + 1) / (K + 2)``, whose SE is never 0 and is close to the plug-in SE once K is
large, and never stops before ``min_models`` models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tailscope._checks import check_scalar
from tailscope.estimate import memorization_counts

__all__ = [
    "Progress",
    "StoppingRule",
    "Verdict",
    "max_models",
    "smoothed_memorization_se",
    "until_se",
]


@dataclass(frozen=True)
class Progress:
    """The finished models of a run: masks (k, n) bool and correct_train (k, n) bool."""

    masks: np.ndarray
    correct_train: np.ndarray

    @property
    def n_models(self) -> int:
        return len(self.masks)


@dataclass(frozen=True)
class Verdict:
    """Whether to stop, why (``reason``, empty if not), and what was measured."""

    stop: bool
    reason: str = ""
    measured: tuple[tuple[str, object], ...] = ()

    def record(self) -> dict[str, object]:
        return dict(self.measured)


class StoppingRule:
    """Base of the rules: ``check`` and ``limit``, composed with ``|`` and ``&``."""

    def check(self, progress: Progress) -> Verdict:
        raise NotImplementedError

    def limit(self) -> float:
        """The most models this rule lets a run train (inf: no limit of its own)."""
        return math.inf

    def __or__(self, other: StoppingRule) -> StoppingRule:
        return _Either(self, other)

    def __and__(self, other: StoppingRule) -> StoppingRule:
        return _Both(self, other)


@dataclass(frozen=True)
class _Either(StoppingRule):
    a: StoppingRule
    b: StoppingRule

    def check(self, progress: Progress) -> Verdict:
        first, second = self.a.check(progress), self.b.check(progress)
        chosen = first if first.stop else second
        return Verdict(chosen.stop, chosen.reason, first.measured + second.measured)

    def limit(self) -> float:
        return min(self.a.limit(), self.b.limit())

    def __repr__(self) -> str:
        return f"({self.a!r} | {self.b!r})"


@dataclass(frozen=True)
class _Both(StoppingRule):
    a: StoppingRule
    b: StoppingRule

    def check(self, progress: Progress) -> Verdict:
        first, second = self.a.check(progress), self.b.check(progress)
        stop = first.stop and second.stop
        reason = f"{first.reason} & {second.reason}" if stop else ""
        return Verdict(stop, reason, first.measured + second.measured)

    def limit(self) -> float:
        return max(self.a.limit(), self.b.limit())

    def __repr__(self) -> str:
        return f"({self.a!r} & {self.b!r})"


def smoothed_memorization_se(masks: np.ndarray, correct_train: np.ndarray) -> np.ndarray:
    """(n,) SE of mem with add-one smoothed proportions: never 0, +inf if never in/out."""
    hits_in, k_in, hits_out, k_out = memorization_counts(masks, correct_train)
    p_in = (hits_in + 1) / (k_in + 2)
    p_out = (hits_out + 1) / (k_out + 2)
    with np.errstate(divide="ignore"):
        var = p_in * (1 - p_in) / k_in + p_out * (1 - p_out) / k_out
    return np.sqrt(var)


@dataclass(frozen=True)
class _UntilSE(StoppingRule):
    se: float
    quantile: float
    min_models: int

    def check(self, progress: Progress) -> Verdict:
        value = math.inf
        if progress.n_models >= self.min_models:
            se = smoothed_memorization_se(progress.masks, progress.correct_train)
            # The order statistic at or above the quantile: an SE some example really has,
            # and no interpolation between an inf (never in / never out) and a finite SE.
            value = float(np.quantile(se, self.quantile, method="higher"))
        measured = (
            ("target_se", self.se),
            ("quantile", self.quantile),
            ("se_quantile", value if math.isfinite(value) else None),  # None: too few models
        )
        return Verdict(value <= self.se, "se_target" if value <= self.se else "", measured)

    def __repr__(self) -> str:
        return f"until_se({self.se}, quantile={self.quantile}, min_models={self.min_models})"


def until_se(se: float, quantile: float = 0.95, min_models: int = 32) -> StoppingRule:
    """Stop once the ``quantile`` of the (smoothed) memorization SEs is ``<= se``, never with
    fewer than ``min_models`` finished models."""
    return _UntilSE(
        check_scalar(se, "until_se", float, min_val=0, max_val=1, inclusive=False),
        check_scalar(quantile, "quantile", float, min_val=0, max_val=1),
        check_scalar(min_models, "min_models", int, min_val=2),
    )


@dataclass(frozen=True)
class _MaxModels(StoppingRule):
    n: int

    def check(self, progress: Progress) -> Verdict:
        stop = progress.n_models >= self.n
        return Verdict(stop, "max_models" if stop else "", (("max_models", self.n),))

    def limit(self) -> float:
        return self.n

    def __repr__(self) -> str:
        return f"max_models({self.n})"


def max_models(n: int) -> StoppingRule:
    """Stop at ``n`` finished models (and never train more)."""
    return _MaxModels(check_scalar(n, "max_models", int, min_val=2))
