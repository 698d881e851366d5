"""High-influence pairs: the paper's summary row of a pair table.

A pair (i, j) is selected when ``infl(i, j) >= 0.15``, ``mem(i) >= 0.25`` and train example
i has the label of test example j (:meth:`tailscope.Estimates.high_influence_pairs` selects
them). The paper summarizes a selection in one row (Feldman & Zhang 2020, Table 1): the
number of pairs, of distinct test examples (also as a % of the test set), of test examples
with exactly one influencer, of distinct train examples, and the most influencers any one
test example has.

With few models many selected pairs are noise. :func:`mirror_pair_count` estimates how many:
it counts the pairs that pass the same selection with the sign of the influence flipped
(``infl <= -0.15``). True influence of a train example on a same-label test example is
rarely that negative, while estimation noise is symmetric, so the mirror count estimates the
number of noise pairs among the selected ones. It is a lower bound when the models' overall
accuracy varies much: ``mem(i)`` and ``infl(i, .)`` are estimated from the same masks, so
selecting rows on ``mem >= 0.25`` also favours rows whose influence noise is positive.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from tailscope.errors import DataError
from tailscope.estimate import Estimates

__all__ = ["mirror_pair_count", "pair_summary"]


def pair_summary(train: ArrayLike, test: ArrayLike, n_test: int | None = None) -> dict[str, float]:
    """The paper's summary row of the pairs ``(train[p], test[p])``.

    Args:
        train: (p,) train index of every pair.
        test: (p,) test index of every pair.
        n_test: size of the test set, for the percentage (omitted from the row if None).

    Returns:
        ``pairs``, ``unique_test``, ``unique_test_pct`` (if ``n_test``),
        ``single_influencer_tests``, ``unique_train`` and ``max_influencers_per_test`` (0 when
        there are no pairs).
    """
    train = np.asarray(train).reshape(-1)
    test = np.asarray(test).reshape(-1)
    if len(train) != len(test):
        raise DataError(f"train has {len(train)} entries but test has {len(test)}")
    if n_test is not None and (isinstance(n_test, bool) or int(n_test) < 1):
        raise DataError(f"n_test must be a positive integer, got {n_test!r}")
    frame = pd.DataFrame({"train": train, "test": test}).drop_duplicates()
    per_test = frame["test"].value_counts()
    row: dict[str, float] = {"pairs": len(frame), "unique_test": len(per_test)}
    if n_test is not None:
        row["unique_test_pct"] = 100.0 * len(per_test) / int(n_test)
    row["single_influencer_tests"] = int((per_test == 1).sum())
    row["unique_train"] = int(frame["train"].nunique())
    row["max_influencers_per_test"] = int(per_test.max()) if len(per_test) else 0
    return row


def mirror_pair_count(
    estimates: Estimates, infl: float = 0.15, mem: float = 0.25, same_label: bool = True
) -> int:
    """Pairs with ``infl(i, j) <= -infl``, ``mem(i) >= mem`` (and the same label): the number
    of noise pairs to expect among those :meth:`Estimates.high_influence_pairs` selects."""
    return len(estimates.high_influence_pairs(infl, mem, same_label, fdr=None, mirrored=True))
