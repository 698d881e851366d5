"""Findings beside the raw threshold counts, their noise floor, and the K an effect needs.

For memorization (one test per train example) and for the high-influence pairs (one test
per defined (train, test) pair), :func:`findings` reports:

- ``findings``: the estimates Benjamini-Hochberg at level ``fdr`` declares positive that also
  reach the threshold (``mem >= 0.25``; ``infl >= 0.15`` with ``mem`` a finding too, same
  label);
- ``threshold``: what the paper's plain rule selects (estimate >= threshold);
- ``mirror``: what the same rule selects with the sign flipped (``mem <= -0.25``; pairs with
  ``infl <= -0.15``). Noise is symmetric and true effects that negative are rare, so this
  counts the noise in the plain rule's selection;
- ``models_needed``: the K at which an effect of the threshold's size is detected with 80%
  power by the one-sided exact test at this run's BH per-test cutoff (the largest p-value
  declared a finding), or at ``fdr / N`` where nothing passed, at the median base rate
  (``p_out``) of the examples on which an effect that size is possible (``p_out + effect <=
  1``), with the run's subset ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tailscope.estimate import Estimates, models_needed

__all__ = ["Findings", "FindingsRow", "findings"]

#: The power at which "models needed" is computed.
POWER = 0.8


@dataclass(frozen=True)
class FindingsRow:
    """One table's counts: see the module docstring."""

    findings: int
    threshold: int
    mirror: int
    n_tests: int
    cutoff: float
    base_rate: float
    models_needed: int | None


@dataclass(frozen=True, eq=False)
class Findings:
    """Findings of one run at one FDR level.

    Attributes:
        fdr, infl, mem, ratio: the level, the thresholds and the run's subset ratio.
        memorization, pairs: :class:`FindingsRow` of each table.
        pair_table: the pairs found (:meth:`Estimates.high_influence_pairs` with ``fdr``).
    """

    fdr: float
    infl: float
    mem: float
    ratio: float
    memorization: FindingsRow
    pairs: FindingsRow
    pair_table: pd.DataFrame


def findings(
    est: Estimates, *, infl: float = 0.15, mem: float = 0.25, fdr: float = 0.1, ratio: float = 0.7
) -> Findings:
    """Findings of ``est`` at FDR ``fdr`` beside the plain and mirrored threshold counts (see
    the module docstring). ``ratio`` is the run's subset ratio, for the power."""
    result = est.memorization_result
    values = np.nan_to_num(result.value, nan=0.0)
    found = result.findings(fdr, at_least=mem)
    n_defined = int(np.count_nonzero(~np.isnan(result.value)))
    with np.errstate(invalid="ignore"):
        rejected = result.p[result.q <= fdr]
    mem_cutoff = float(rejected.max()) if len(rejected) else fdr / max(n_defined, 1)
    p_out = result.hits_out / np.maximum(result.k_out, 1)
    memorization = FindingsRow(
        findings=int(found.sum()),
        threshold=int(np.count_nonzero(values >= mem)),
        mirror=int(np.count_nonzero(values <= -mem)),
        n_tests=n_defined,
        cutoff=mem_cutoff,
        **_power(mem, mem_cutoff, p_out, ratio),
    )

    table = est.high_influence_pairs(infl=infl, mem=mem, fdr=fdr)
    family = est.influence_findings(infl, fdr)
    pair_cutoff = family.cutoff if len(family.pairs) else fdr / max(family.n_tests, 1)
    test_accuracy = np.asarray(est.correct_test).mean(axis=0)
    pairs = FindingsRow(
        findings=len(table),
        threshold=len(est.high_influence_pairs(infl=infl, mem=mem, fdr=None)),
        mirror=len(est.high_influence_pairs(infl=infl, mem=mem, fdr=None, mirrored=True)),
        n_tests=int(family.n_tests),
        cutoff=float(pair_cutoff),
        **_power(infl, pair_cutoff, test_accuracy, ratio),
    )
    return Findings(fdr, infl, mem, ratio, memorization, pairs, table)


def _power(effect: float, alpha: float, p_out: np.ndarray, ratio: float) -> dict[str, object]:
    """The base rate (median p_out where ``p_out + effect <= 1``) and the models needed."""
    possible = p_out[p_out + effect <= 1]
    if not len(possible) or not np.isfinite(alpha) or alpha <= 0:
        return {"base_rate": float("nan"), "models_needed": None}
    base = float(np.median(possible))
    needed = models_needed(effect, alpha, base, ratio=ratio, power=POWER)
    return {"base_rate": base, "models_needed": needed}
