"""Label issues from out-of-sample class probabilities (confident learning, via cleanlab).

``oos_prob[i]`` is the mean softmax vector of the models that did not train on example i
(every model, for a test example). With ``y`` the given label and ``p = oos_prob[i]``:

- ``label_quality = (p_y - max_{c != y} p_c + 1) / 2`` in [0, 1], cleanlab's normalized
  margin (``cleanlab.rank.get_label_quality_scores(method="normalized_margin")``): low means
  the held-out models prefer another class; it is below 1/2 exactly when some class is more
  probable than the given one.
- ``suggested_label = argmax_c p_c`` (ties to the lower class).
- ``label_issue`` (``rule="margin"``, the default): ``label_quality < threshold``, i.e. the
  held-out models put at least ``1 - 2 threshold`` more probability on another class than on
  the given label. ``threshold = 0.25`` (another class ahead by 0.5) is calibrated on MNIST
  (``benchmarks/calibrate_label_issues.py``: 8 demo MLPs, 5 epochs on 70% subsets, 97.5% test
  accuracy each): it flags 53 of the 10,000 test examples (0.5%; the pool misclassifies
  163) and 1.0% of the train examples, most of them malformed or ambiguous digits, more so
  the lower their quality; thresholds 0.1 / 0.5 flag 22 / 163 test examples. cleanlab's
  default confident-learning filter flags 5 test examples: a pool's probabilities are near
  0 or 1, so its per-class thresholds are near 1. ``rule="confident_learning"`` uses
  ``cleanlab.filter.find_label_issues`` with its defaults instead.

A row of NaN probabilities (no model held the example out) gets NaN quality, no flag and
suggested label -1. cleanlab is an optional dependency: ``pip install 'tailscope[labels]'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.typing import ArrayLike

from tailscope._checks import check_choice
from tailscope.errors import DataError, TailscopeError
from tailscope.scores._checks import check_labels, check_probabilities, warn_undefined

__all__ = [
    "CLEANLAB_INSTALL",
    "DEFAULT_THRESHOLD",
    "RULES",
    "LabelIssues",
    "MissingDependencyError",
    "cleanlab_version",
    "label_issues",
]

CLEANLAB_INSTALL = "pip install 'tailscope[labels]'"
DEFAULT_THRESHOLD = 0.25
RULES = ("margin", "confident_learning")


class MissingDependencyError(TailscopeError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""


def _cleanlab() -> ModuleType:
    """Import cleanlab's ranking and filtering modules, or say how to install them."""
    try:
        import cleanlab
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        raise MissingDependencyError(
            f"label quality needs the optional package cleanlab: {CLEANLAB_INSTALL}"
        ) from None
    return cleanlab


def cleanlab_version() -> str | None:
    """The installed cleanlab version, or None when it is not installed."""
    try:
        return _cleanlab().__version__
    except MissingDependencyError:
        return None


@dataclass(frozen=True, eq=False)
class LabelIssues:
    """Per-example label scores of n examples.

    Attributes:
        label_quality: (n,) float64 in [0, 1], low = likely mislabeled; NaN if undefined.
        label_issue: (n,) bool, flagged by ``rule``.
        suggested_label: (n,) int64, argmax of the out-of-sample probabilities, -1 if undefined.
        given_prob: (n,) float64, out-of-sample probability of the given label.
        rule, threshold: the flagging rule and its threshold (NaN for confident learning).
    """

    label_quality: np.ndarray
    label_issue: np.ndarray
    suggested_label: np.ndarray
    given_prob: np.ndarray
    rule: str
    threshold: float


def label_issues(
    oos_prob: ArrayLike,
    labels: ArrayLike,
    *,
    rule: str = "margin",
    threshold: float = DEFAULT_THRESHOLD,
) -> LabelIssues:
    """Label quality, issue flags and suggested labels (see the module docstring).

    Args:
        oos_prob: (n, C) out-of-sample class probabilities (rows sum to 1; all-NaN rows
            for examples without any held-out model).
        labels: (n,) given labels in [0, C).
        rule: ``"margin"`` (flag ``label_quality < threshold``) or ``"confident_learning"``.
        threshold: for ``"margin"``, in (0, 0.5]; lower flags fewer examples.

    Returns:
        A :class:`LabelIssues`. Raises :class:`MissingDependencyError` without cleanlab.
    """
    cleanlab = _cleanlab()
    probs = check_probabilities(oos_prob, "oos_prob")
    n, n_classes = probs.shape
    labels = check_labels(labels, n, "labels", n_classes)
    check_choice(rule, "rule", RULES)
    if rule == "margin" and not (np.isfinite(threshold) and 0 < threshold <= 0.5):
        raise DataError(f"threshold must be in (0, 0.5], got {threshold!r}")

    defined = ~np.isnan(probs).any(axis=1)
    warn_undefined(int((~defined).sum()), n, "label quality", "were in every subset")
    quality = np.full(n, np.nan)
    issue = np.zeros(n, dtype=bool)
    suggested = np.full(n, -1, dtype=np.int64)
    given = np.full(n, np.nan)
    if defined.any():
        p, y = probs[defined], labels[defined]
        quality[defined] = cleanlab.rank.get_label_quality_scores(y, p, method="normalized_margin")
        suggested[defined] = p.argmax(axis=1)
        given[defined] = p[np.arange(len(y)), y]
        if rule == "margin":
            issue[defined] = quality[defined] < threshold
        else:
            try:
                issue[defined] = cleanlab.filter.find_label_issues(y, p)
            except (ValueError, AssertionError, TypeError) as err:
                raise DataError(f"cleanlab's find_label_issues rejected the input: {err}") from None
    return LabelIssues(
        label_quality=quality,
        label_issue=issue,
        suggested_label=suggested,
        given_prob=given,
        rule=rule,
        threshold=float(threshold) if rule == "margin" else float("nan"),
    )
