"""False discovery rate control: Benjamini-Hochberg (BH) and Benjamini-Yekutieli (BY).

For N tests with sorted p-values ``p_(1) <= ... <= p_(N)``, the adjusted p-values (q-values)
are::

    q_(i) = min(1, min_{j >= i} c N p_(j) / j),   c = 1 (BH) or sum_{l <= N} 1/l (BY)

and the procedure at level ``q`` rejects exactly the tests with ``q_(i) <= q`` (the same set
as "the largest k with ``p_(k) <= q k / (c N)``, and every p-value up to it"). BH controls the
FDR at ``q`` for independent or positively dependent p-values, BY under any dependence.

:func:`bh_qvalues` does this for a dense vector (memorization: one test per train example).
The influence family has one test per (train, test) pair, n x t of them (MNIST: 6e8), too
many to hold; two streaming objects give the same rejections and q-values from chunks:

- :class:`StreamingBH` takes chunks of p-values;
- :class:`InfluenceFDR` takes the influence scan's exact counts, ``in_count`` (t, c) per
  chunk of c train examples, and compares them with per-test thresholds read off a table
  per distinct k_in (no special function per pair).

Both count the p-values of every chunk on a fine log grid below q (a pass over the family)
and keep the tests in the lowest bins, as many as ``max_kept``. The grid brackets the BH
cutoff: a bin ``(e_{g-1}, e_g]`` can hold a rejected p-value only if ``e_{g-1} < q R(e_g) /
(c N)``, where ``R(e)`` counts the p-values ``<= e``, so every rejection lies at or below the
largest such bin's upper edge. If the kept tests reach that edge, one pass was enough;
otherwise ``needs_another_pass`` is true and a pass over the same chunks gathers the tests up
to it. Among those, sorted, the ranks are the global ranks, so the rejections and their
q-values are exactly those of the dense procedure (tests/test_fdr.py checks it against it,
ties, all-null, all-signal and N = 1 included). What is returned is the rejected tests
only: a test not rejected has a q-value above the level, and no value is given for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from scipy.special import digamma

from tailscope._checks import check_choice, check_scalar
from tailscope.errors import DataError
from tailscope.estimate.significance import hypergeom_tail_window, hypergeom_upper_tail

__all__ = [
    "Discoveries",
    "InfluenceFDR",
    "PairDiscoveries",
    "StreamingBH",
    "bh_qvalues",
    "bh_reject",
]

METHODS = ("bh", "by")
# The bracket's test e_{g-1} c N < q R(e_g) is loosened by this relative amount, so that
# rounding can only make the collected set larger, never miss a rejection.
_BRACKET_SLACK = 1e-9
# The p-value tables of InfluenceFDR need accurate tails down to the grid's lowest edge.
_LOWEST_EDGE = 1e-26
# Unsorted chunks whose k_in groups average fewer columns than this are one mixed block.
_NARROW_GROUPS = 64


# --- dense -----------------------------------------------------------------------------------


def _check_method(method: object) -> str:
    return str(check_choice(method, "method", METHODS))


def _check_level(q: object) -> float:
    return check_scalar(q, "q", float, min_val=0.0, max_val=1.0, inclusive=False)


def _check_pvalues(p: ArrayLike, name: str = "p") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    defined = p[~np.isnan(p)]
    if defined.size and (defined.min() < 0.0 or defined.max() > 1.0):
        raise DataError(f"{name} must hold p-values in [0, 1] (or NaN for no test)")
    return p


def dependence_factor(method: str, n_tests: int) -> float:
    """``c(N)``: 1 for BH; ``sum_{i <= N} 1 / i`` for BY (by digamma above 10**6 terms)."""
    if method == "bh" or n_tests <= 1:
        return 1.0
    if n_tests <= 10**6:
        return float(np.sum(1.0 / np.arange(1, n_tests + 1, dtype=np.float64)))
    return float(digamma(n_tests + 1.0) + np.euler_gamma)


def _adjusted(p_sorted: np.ndarray, n_tests: int, factor: float) -> np.ndarray:
    """q-values of the m smallest of N p-values, given sorted: ranks 1..m are global ranks.

    ``min(1, min_{m >= j >= i} c N p_(j) / j)``; equal to the full formula at every i whose
    value is <= the level when the p-values left out all have ``c N p_(j) / j`` above it.
    """
    ranks = np.arange(1, len(p_sorted) + 1, dtype=np.float64)
    values = (factor * n_tests) * p_sorted / ranks
    q = np.minimum.accumulate(values[::-1])[::-1]
    return np.minimum(q, 1.0)


def bh_qvalues(p: ArrayLike, method: str = "bh") -> np.ndarray:
    """BH (or BY) adjusted p-values of a dense array of p-values, any shape.

    NaN entries (no estimate) are not tests: they do not count in N and stay NaN. Returns
    float64 of ``p``'s shape; ``bh_qvalues(p) <= q`` is the BH rejection set at level q.
    """
    method = _check_method(method)
    p = _check_pvalues(p)
    q = np.full(p.shape, np.nan)
    flat_p, flat_q = p.ravel(), q.reshape(-1)
    defined = np.flatnonzero(~np.isnan(flat_p))
    if not len(defined):
        return q
    order = defined[np.argsort(flat_p[defined], kind="stable")]
    n_tests = len(defined)
    flat_q[order] = _adjusted(flat_p[order], n_tests, dependence_factor(method, n_tests))
    return q


def bh_reject(p: ArrayLike, q: float = 0.1, method: str = "bh") -> np.ndarray:
    """Boolean mask of the tests that BH (or BY) rejects at FDR level ``q``; NaN is never
    rejected (and not counted as a test)."""
    level = _check_level(q)
    return np.asarray(bh_qvalues(p, method) <= level)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Discoveries:
    """The tests a streamed BH/BY procedure rejected, by increasing p-value.

    Attributes:
        index: (r,) int64 ids of the rejected tests (as given to ``observe``).
        p: (r,) float64 p-values.
        q: (r,) float64 q-values (BH/BY adjusted p-values), exact; all <= ``level``.
        n_tests: N, the number of tests (defined p-values) in the family.
        level: the FDR level q.
        method: ``"bh"`` or ``"by"``.
        cutoff: the largest rejected p-value (NaN when nothing was rejected): every p-value
            <= it is rejected.
    """

    index: np.ndarray
    p: np.ndarray
    q: np.ndarray
    n_tests: int
    level: float
    method: str
    cutoff: float

    def __len__(self) -> int:
        return len(self.p)


@dataclass(frozen=True, eq=False)
class PairDiscoveries:
    """The (train, test) pairs whose influence BH/BY declared positive, by increasing p-value
    (ties by test, then train index), with the counts behind each estimate.

    Attributes:
        train, test: (r,) int64 indices.
        p, q: (r,) float64 one-sided Fisher p-values and their q-values (exact, <= level).
        hits_in, k_in, hits_out, k_out: (r,) int64 counts: ``k_in`` models had the train
            example in their subset, ``hits_in`` of them got the test example right; likewise
            ``k_out``, ``hits_out`` for the others. ``infl = hits_in/k_in - hits_out/k_out``.
        n_tests, level, method, cutoff: as in :class:`Discoveries`.
    """

    train: np.ndarray
    test: np.ndarray
    p: np.ndarray
    q: np.ndarray
    hits_in: np.ndarray
    k_in: np.ndarray
    hits_out: np.ndarray
    k_out: np.ndarray
    n_tests: int
    level: float
    method: str
    cutoff: float

    def __len__(self) -> int:
        return len(self.p)

    @property
    def infl(self) -> np.ndarray:
        """(r,) float64 influence estimates ``hits_in / k_in - hits_out / k_out``."""
        return self.hits_in / self.k_in - self.hits_out / self.k_out

    def to_frame(self) -> pd.DataFrame:
        """Columns ``train, test, infl, p, q, hits_in, k_in, hits_out, k_out``."""
        return pd.DataFrame(
            {
                "train": self.train,
                "test": self.test,
                "infl": self.infl,
                "p": self.p,
                "q": self.q,
                "hits_in": self.hits_in,
                "k_in": self.k_in,
                "hits_out": self.hits_out,
                "k_out": self.k_out,
            }
        )


# --- streaming core --------------------------------------------------------------------------


class _StreamingCore:
    """The passes of a streamed BH/BY procedure: histograms, kept tests, bracket, collection.

    The grid: ``grid`` e_0 < ... < e_{G-1} = q, geometric (``bins_per_decade`` per decade
    over ``decades`` decades). A p-value is in bin 0 if ``p <= e_0``, in bin g if
    ``e_{g-1} < p <= e_g``, in bin G if ``p > q`` (never rejected: every cutoff is <= q).

    A histogram pass counts, over every chunk, the tests in each grid bin up to an
    *extraction level* (the tests there are found one by one, and kept while they fit) and
    only the tests at or below each of a few *coarse levels* above it (a comparison each).
    The bracket then runs over these edges. If its bin lies above the extraction level, the
    next pass is a histogram pass extracting up to that bin's upper edge; otherwise, if the
    kept tests do not reach that edge, the next pass collects the tests up to it.
    Subclasses turn chunks into records (dicts of equal-length arrays with a ``"bin"``
    entry, the grid bin) and give the records' p-values at the end.
    """

    def __init__(
        self,
        q: float,
        method: str,
        bins_per_decade: int,
        decades: int,
        max_kept: int,
        coarse: tuple[int, ...],
    ) -> None:
        self.level = _check_level(q)
        self.method = _check_method(method)
        for name, value in (("bins_per_decade", bins_per_decade), ("decades", decades)):
            check_scalar(value, name, int, min_val=1)
        check_scalar(max_kept, "max_kept", int, min_val=0)
        n_edges = int(bins_per_decade) * int(decades) + 1
        if n_edges > 255:
            raise DataError(
                f"bins_per_decade * decades must be <= 254 (bins fit a byte), got {n_edges - 1}"
            )
        exponents = (np.arange(n_edges) - (n_edges - 1)) / bins_per_decade
        self.grid = self.level * 10.0**exponents
        self.grid[-1] = self.level
        if self.grid[0] < _LOWEST_EDGE:
            raise DataError(
                f"the lowest bin edge q * 10**-decades = {self.grid[0]:.3g} must be >= "
                f"{_LOWEST_EDGE:g}; use fewer decades"
            )
        self.n_bins = n_edges  # G: grid bins 0..G-1 lie at or below q, bin G above it
        self.max_kept = int(max_kept)
        # Coarse levels: grid indices counted by comparison only, above the extraction level
        top = n_edges - 1
        levels = sorted({top - int(c) for c in coarse if 0 <= int(c) <= top} | {top})
        self._extract = levels[0]  # grid index of the extraction level
        self._coarse = levels[1:]
        self.n_tests = 0
        self.passes_done = 0
        self._mode = "histogram"
        self._collect_to: int | None = None  # grid bin up to which to collect
        self._done = False
        self._start_pass()

    # passes --------------------------------------------------------------------------------

    def _start_pass(self) -> None:
        self._observed = False  # whether observe() has seen a chunk of this pass
        self._pass_tests = 0
        self._fine = np.zeros(self._extract + 1, dtype=np.int64)  # grid bins 0..extract
        self._coarse_counts = np.zeros(len(self._coarse), dtype=np.int64)  # p <= level
        self._keep_bin = self._extract  # the kept records: the tests in bins <= it
        self._kept: list[dict[str, np.ndarray]] = []
        self._kept_histogram = np.zeros(self._extract + 1, dtype=np.int64)

    def _check_open(self) -> None:
        if self._done:
            raise RuntimeError("result() was already called; start a new object")

    def _count(self, fine: np.ndarray, coarse: np.ndarray, n_tests: int) -> int:
        """Add a chunk's counts; return the grid bin up to which its tests are to be kept."""
        self._observed = True
        self._fine += fine
        self._coarse_counts += coarse
        self._pass_tests += int(n_tests)
        combined = np.cumsum(self._kept_histogram + fine)
        if self._keep_bin >= 0 and combined[self._keep_bin] > self.max_kept:
            fits = np.flatnonzero(combined[: self._keep_bin + 1] <= self.max_kept // 2)
            self._keep_bin = int(fits[-1]) if len(fits) else -1
            self._kept = [_take(r, r["bin"] <= self._keep_bin) for r in self._kept]
            self._kept_histogram[self._keep_bin + 1 :] = 0
        return self._keep_bin

    def _keep(self, records: dict[str, np.ndarray]) -> None:
        self._kept.append(records)
        self._kept_histogram += np.bincount(records["bin"], minlength=self._extract + 1)

    def _collect(self, records: dict[str, np.ndarray], n_tests: int) -> None:
        self._observed = True
        self._kept.append(records)
        self._pass_tests += int(n_tests)

    def _bracket(self) -> int:
        """The highest grid index whose edge bounds every rejection (-1: none), from this
        pass's counts."""
        edges = [*range(self._extract + 1), *self._coarse]
        below = np.concatenate([np.cumsum(self._fine), self._coarse_counts])  # R(edge)
        values = self.grid[edges]
        lower = np.concatenate([[0.0], values[:-1]])
        factor = dependence_factor(self.method, self.n_tests)
        possible = lower * factor * self.n_tests < self.level * below * (1.0 + _BRACKET_SLACK)
        possible &= below > 0
        hits = np.flatnonzero(possible)
        return edges[hits[-1]] if len(hits) else -1

    @property
    def needs_another_pass(self) -> bool:
        """End the pass over the family that is under way; say whether ``observe`` must see
        every chunk once more (same chunks, any order). Usually false after the first pass:
        true when the rejections outnumber ``max_kept`` / 2 or more than ~4% of the tests
        have p-values below q / 5 (then two more passes at most). Asking again before the
        next pass has seen a chunk gives the same answer."""
        self._check_open()
        if self._mode == "done":
            return False
        if self.passes_done and not self._observed:
            return True  # the pass asked for has not started
        self.passes_done += 1
        if self.passes_done == 1:
            self.n_tests = self._pass_tests
        if self._pass_tests != self.n_tests:
            raise RuntimeError(
                f"this pass saw {self._pass_tests} tests where the first saw {self.n_tests}: "
                "every pass must see exactly the chunks of the first"
            )
        if self._mode == "collect":
            self._mode = "done"
            return False
        last = self._bracket()
        if last > self._extract:  # in a coarse bin: histogram again, extracting up to it
            self._extract = last
            self._coarse = [c for c in self._coarse if c > last]
            self._start_pass()
            return True
        self._collect_to = last
        if last <= self._keep_bin:
            self._kept = [_take(r, r["bin"] <= last) for r in self._kept]
            self._mode = "done"
            return False
        self._mode = "collect"
        self._kept = []
        self._pass_tests = 0
        self._observed = False
        return True

    def passes(self):
        """Yield once per pass over the family: ``for _ in fdr.passes(): for chunk in ...:
        fdr.observe(...)``. One pass usually; three at most."""
        yield 0
        while self.needs_another_pass:
            yield self.passes_done

    # result ------------------------------------------------------------------------------

    def _resolve(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The rejected records with their p- and q-values, sorted by p."""
        self._check_open()
        if self._mode != "done" and self.needs_another_pass:
            raise RuntimeError("needs_another_pass is true: observe every chunk again first")
        self._done = True
        last = self._collect_to if self._collect_to is not None else -1
        records = _concat(self._kept)
        records = _take(records, records["bin"].astype(np.int64) <= last)
        expected = int(self._fine[: last + 1].sum()) if last >= 0 else 0
        if len(records["bin"]) != expected:
            raise RuntimeError(
                f"the last pass found {len(records['bin'])} tests at or below the bracket "
                f"where the one before counted {expected}: every pass must see the same chunks"
            )
        p = self._pvalues(records)
        order = np.lexsort((*self._tiebreak(records), p))
        records, p = _take(records, order), p[order]
        q = _adjusted(p, self.n_tests, dependence_factor(self.method, self.n_tests))
        rejected = q <= self.level
        return _take(records, rejected), p[rejected], q[rejected]

    def _pvalues(self, records: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _tiebreak(self, records: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        raise NotImplementedError


def _take(records: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[index] for name, values in records.items()}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["bin"])] or parts[:1]
    if not parts:
        return {"bin": np.empty(0, dtype=np.uint8)}
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


# --- p-values in chunks ------------------------------------------------------------------------


class StreamingBH(_StreamingCore):
    """BH/BY over a family of tests whose p-values arrive in chunks.

    Usage::

        fdr = StreamingBH(q=0.1)
        for _ in fdr.passes():          # one pass unless more than max_kept/2 rejections
            for p, ids in chunks():
                fdr.observe(p, ids)
        found = fdr.result()            # Discoveries

    Memory: a 255-bin histogram plus at most ``max_kept`` kept tests (then the collected
    ones, if a second pass is needed).

    Args:
        q: FDR level in (0, 1).
        method: ``"bh"`` (independent or positively dependent tests) or ``"by"`` (any
            dependence).
        bins_per_decade, decades: the log grid below q (at most 254 bins).
        max_kept: tests kept in the first pass (~17 bytes each); when the rejections lie
            below the kept ones, one pass is enough.
    """

    def __init__(
        self,
        q: float = 0.1,
        *,
        method: str = "bh",
        bins_per_decade: int = 16,
        decades: int = 15,
        max_kept: int = 2**21,
    ) -> None:
        super().__init__(q, method, bins_per_decade, decades, max_kept, coarse=())
        self._offset = 0
        self._offset_pass = 0

    def observe(self, p: ArrayLike, ids: ArrayLike | None = None) -> None:
        """One chunk: ``p`` any shape (NaN = no test), ``ids`` integer ids of the same size
        (default: running positions over the pass's chunks, NaN included)."""
        self._check_open()
        p = _check_pvalues(p).ravel()
        if self._offset_pass != self.passes_done:
            self._offset, self._offset_pass = 0, self.passes_done
        if ids is None:
            ids = np.arange(self._offset, self._offset + p.size, dtype=np.int64)
            self._offset += p.size
        else:
            ids = np.asarray(ids)
            if ids.size != p.size or not np.issubdtype(ids.dtype, np.integer):
                raise DataError(f"ids must hold one integer per p-value ({p.size})")
            ids = ids.ravel().astype(np.int64)
        defined = ~np.isnan(p)
        p, ids = p[defined], ids[defined]
        bins = np.searchsorted(self.grid, p, side="left").astype(np.uint8)
        if self._mode == "collect":
            chosen = bins <= self._collect_to
            self._collect({"index": ids[chosen], "p": p[chosen], "bin": bins[chosen]}, len(p))
            return
        if self._mode == "done":
            raise RuntimeError("no further pass is needed: call result()")
        fine = np.bincount(bins, minlength=self.n_bins + 1)[: self._extract + 1]
        keep = self._count(fine, np.zeros(0, dtype=np.int64), len(p))
        chosen = bins <= keep
        self._keep({"index": ids[chosen], "p": p[chosen], "bin": bins[chosen]})

    def result(self) -> Discoveries:
        """The rejected tests with exact p- and q-values (those of :func:`bh_qvalues`)."""
        records, p, q = self._resolve()
        return Discoveries(
            index=records.get("index", np.empty(0, dtype=np.int64)),
            p=p,
            q=q,
            n_tests=self.n_tests,
            level=self.level,
            method=self.method,
            cutoff=float(p[-1]) if len(p) else float("nan"),
        )

    def _pvalues(self, records: dict[str, np.ndarray]) -> np.ndarray:
        return records.get("p", np.empty(0))

    def _tiebreak(self, records: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        return (records.get("index", np.empty(0, dtype=np.int64)),)


# --- influence counts in chunks -----------------------------------------------------------


class _BinTable:
    """For one ``k_in``: the p-value grid bin of every (test hits h, in_count x), as a gather.

    Row r (one distinct h) covers the band of x whose p-value lies in (e_0, q]:
    ``x_top[r] <= x < x_top[r] + width``. Column 0 stands for every x below the band
    (p > q: bin G), column ``1 + x - x_top[r]`` for x in it, column ``width + 1`` for every
    x above it (p <= e_0: bin 0). So ``bins[r, clip(x - x_top[r] + 1, 0, width + 1)]`` is
    the bin of x. ``pvalues`` (same layout, NaN outside the band) holds the p-values the
    bins came from. Building the table again, or the table of a few of its rows (``hits`` a
    subset, ``window`` the full table's), gives the same bits.
    """

    def __init__(
        self,
        n_models: int,
        k: int,
        hits: np.ndarray,
        grid: np.ndarray,
        window: tuple[int, int] | None = None,
    ) -> None:
        self.k = k
        top = grid[-1]
        x_min = np.maximum(0, hits + k - n_models)
        # terms left out of the window: far below the lowest edge's last digits
        floor = grid[0] * 1e-16
        if window is None:
            below = 1
            while True:  # the window must start above the band (p > q there)
                start, tail = hypergeom_tail_window(
                    n_models, k, hits, below_mean=below, floor=floor
                )
                if not ((tail[:, 0] <= top) & (start > x_min)).any():
                    break
                below = 2 * below + 8
        else:  # rows of a table built before: the same window gives the same bits
            below = window[0]
            start, tail = hypergeom_tail_window(
                n_models, k, hits, below_mean=below, floor=floor, width=window[1]
            )
        self.window = (below, tail.shape[1])
        n_above = np.count_nonzero(tail > top, axis=1)  # cells with p > q
        n_band = np.count_nonzero(tail > grid[0], axis=1) - n_above
        self.x_top = start + n_above
        self.width = int(n_band.max(initial=0))
        columns = np.arange(self.width)[None, :]
        inside = columns < n_band[:, None]
        cell = np.minimum(n_above[:, None] + columns, tail.shape[1] - 1)
        band = np.where(inside, np.take_along_axis(tail, cell, axis=1), np.nan)
        rows = len(hits)
        self.pvalues = np.full((rows, self.width + 2), np.nan)
        self.pvalues[:, 1:-1] = band
        self.bins = np.zeros((rows, self.width + 2), dtype=np.uint8)
        self.bins[:, 0] = len(grid)
        self.bins[:, 1:-1] = np.where(inside, np.searchsorted(grid, band, side="left"), 0)

    def columns(self, in_count: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Table columns of counts ``in_count`` of table rows ``row`` (1-D, same length)."""
        return np.clip(in_count - self.x_top[row] + 1, 0, self.width + 1)

    def thresholds(self, level: int) -> np.ndarray:
        """Per table row: the smallest x whose bin is <= ``level`` (bins fall as x grows)."""
        first = np.argmax(self.bins[:, 1:] <= level, axis=1)  # column width + 1 is bin 0
        return self.x_top + first


@dataclass(frozen=True, eq=False)
class _Block:
    """Columns of a chunk: ``x`` (t, g) int32 counts, their ``k_in`` and ``train`` ids (g,),
    and ``k`` when every column shares one k_in (else None)."""

    x: np.ndarray
    k_in: np.ndarray
    train: np.ndarray
    k: int | None


class InfluenceFDR(_StreamingCore):
    """BH/BY with one-sided Fisher p-values over every defined (train, test) influence pair,
    fed the influence scan's exact counts chunk by chunk.

    For a chunk of c train examples the scan has ``in_count`` (t, c): ``in_count[j, r]`` of
    the ``k_in[r]`` models that trained on train example r got test example j right; with
    ``test_hits[j]`` models right on j in all, the pair's p-value is ``P(X >= in_count)``,
    ``X ~ Hypergeometric(n_models, test_hits[j], k_in[r])`` (as :func:`fisher_pvalues`, to
    ~1e-13 relative). The family is every pair of a defined train example (``0 < k_in <
    n_models``) with every test example.

    Per distinct k_in a table (built once, ~6-15 ms at K = 2000-4000) gives each test row the
    smallest count whose p-value reaches a level, and the grid bin of every count in the
    band between e_0 and q. A pass over a (t, c) chunk then costs, per pair, a few
    comparisons with those per-row thresholds (the pairs with p <= q/24, ~0.4% under the
    null, are extracted and binned; two coarse levels above, q/5 and q, are only counted).
    Chunks whose train columns are sorted by k_in (train rows ordered by k_in) avoid a
    column copy per distinct value.

    Usage::

        fdr = InfluenceFDR(n_models, test_hits, q=0.1)
        for _ in fdr.passes():                  # one pass, as a rule
            for rows in chunks:
                fdr.observe(in_count, k_in, train_index)
        found = fdr.result()                    # PairDiscoveries

    Args:
        n_models: K.
        test_hits: (t,) models that got each test example right.
        q, method, bins_per_decade, decades, max_kept: as in :class:`StreamingBH` (a kept
            pair takes ~21 bytes).
        test_index: (t,) ids of the test rows of ``in_count`` (default 0..t-1).
    """

    #: Coarse levels, in grid steps below q (1/16 decade each): q/4.9 and q/24 (the first
    #: extraction level). Under the null their bins never bracket a cutoff: that needs more
    #: than 20% of the p-values <= q, or 4% <= q/4.9.
    COARSE = (11, 22)

    def __init__(
        self,
        n_models: int,
        test_hits: ArrayLike,
        q: float = 0.1,
        *,
        method: str = "bh",
        test_index: ArrayLike | None = None,
        bins_per_decade: int = 16,
        decades: int = 15,
        max_kept: int = 2**21,
    ) -> None:
        coarse = tuple(round(c * bins_per_decade / 16) for c in self.COARSE)
        super().__init__(q, method, bins_per_decade, decades, max_kept, coarse=coarse)
        self.n_models = check_scalar(n_models, "n_models", int, min_val=2)
        hits = np.asarray(test_hits)
        if hits.ndim != 1 or not np.issubdtype(hits.dtype, np.integer):
            raise DataError(f"test_hits must be a 1-D integer array, got {hits.dtype} {hits.shape}")
        if hits.size and (hits.min() < 0 or hits.max() > n_models):
            raise DataError(f"test_hits must lie in [0, n_models={n_models}]")
        self.test_hits = hits.astype(np.int64)
        self._hit_values, row = np.unique(self.test_hits, return_inverse=True)
        self._hit_row = row.astype(np.int64)
        if test_index is None:
            self.test_index = np.arange(len(hits), dtype=np.int64)
        else:
            self.test_index = np.asarray(test_index, dtype=np.int64)
            if self.test_index.shape != hits.shape:
                raise DataError("test_index must have one entry per test_hits entry")
        self._tables: dict[int, _BinTable] = {}
        self._thresholds: dict[tuple[int, int], np.ndarray] = {}

    # tables --------------------------------------------------------------------------------

    def _table(self, k: int) -> _BinTable:
        table = self._tables.get(k)
        if table is None:
            table = _BinTable(self.n_models, k, self._hit_values, self.grid)
            table.pvalues = None  # rebuilt for the few k needed at the end
            self._tables[k] = table
        return table

    def _threshold(self, k: int, level: int) -> np.ndarray:
        """(t, 1) int32: per test row, the smallest count whose grid bin is <= ``level``."""
        key = (k, level)
        threshold = self._thresholds.get(key)
        if threshold is None:
            rows = self._table(k).thresholds(level)[self._hit_row]
            threshold = rows.astype(np.int32)[:, None]
            self._thresholds[key] = threshold
        return threshold

    # chunks --------------------------------------------------------------------------------

    def _blocks(self, in_count: ArrayLike, k_in: ArrayLike, train_index: ArrayLike) -> list[_Block]:
        """The chunk's defined columns as blocks: one per distinct k_in (a view of
        ``in_count`` when its columns are sorted by k_in, else a copy of the columns) or,
        when those would be narrow (comparisons with per-test thresholds would run along rows
        of a few entries), one block of mixed k_in."""
        if torch.is_tensor(in_count):
            in_count = in_count.detach().cpu().numpy()
        counts = np.asarray(in_count)
        if counts.ndim != 2 or counts.shape[0] != len(self.test_hits):
            raise DataError(
                f"in_count must be (t, c) with t = {len(self.test_hits)} test rows, got "
                f"shape {counts.shape}"
            )
        if not np.issubdtype(counts.dtype, np.integer):
            raise DataError(f"in_count must hold integer counts, not {counts.dtype}")
        if counts.dtype != np.int32:
            counts = counts.astype(np.int32)
        c = counts.shape[1]
        k_in, train = np.asarray(k_in), np.asarray(train_index)
        if k_in.shape != (c,) or not np.issubdtype(k_in.dtype, np.integer):
            raise DataError(f"k_in must hold {c} integers (one per column of in_count)")
        if train.shape != (c,) or not np.issubdtype(train.dtype, np.integer):
            raise DataError(f"train_index must hold {c} integers (one per column of in_count)")
        k_in, train = k_in.astype(np.int64), train.astype(np.int64)
        defined = np.flatnonzero((k_in > 0) & (k_in < self.n_models))
        if not len(defined):
            return []
        order = defined[np.argsort(k_in[defined], kind="stable")]
        values, starts = np.unique(k_in[order], return_index=True)
        in_place = bool(np.all(np.diff(order) == 1))
        if not in_place and len(order) < _NARROW_GROUPS * len(values):
            x = counts if len(defined) == c else np.take(counts, defined, axis=1)
            return [_Block(x, k_in[defined], train[defined], None)]
        blocks = []
        ends = np.append(starts[1:], len(order))
        for k, a, b in zip(values.tolist(), starts.tolist(), ends.tolist(), strict=True):
            cols = order[a:b]
            x = counts[:, cols[0] : cols[-1] + 1] if in_place else counts[:, cols]
            blocks.append(_Block(x, k_in[cols], train[cols], int(k)))
        return blocks

    def _block_threshold(self, block: _Block, level: int) -> np.ndarray:
        """Thresholds at grid bin ``level`` that broadcast against ``block.x``."""
        if block.k is not None:
            return self._threshold(block.k, level)
        values, column_value = np.unique(block.k_in, return_inverse=True)
        per_value = np.concatenate([self._threshold(int(k), level) for k in values], axis=1)
        return np.take(per_value, column_value, axis=1)  # (t, g)

    def _extract_pairs(self, block: _Block, level: int) -> dict[str, np.ndarray]:
        """The pairs of a block whose grid bin is <= ``level``."""
        x, threshold = block.x, self._block_threshold(block, level)
        if block.k is not None and level < self._extract:  # a collection: skip rows
            rows = np.flatnonzero(x.max(axis=1) >= threshold[:, 0])
            x, threshold = x[rows], threshold[rows]
        else:
            rows = None
        flat = np.flatnonzero(x >= threshold)
        tests, cols = np.divmod(flat, x.shape[1])
        in_count = x[tests, cols]
        if rows is not None:
            tests = rows[tests]
        k_in = block.k_in[cols]
        if (in_count > np.minimum(self.test_hits[tests], k_in)).any():
            raise DataError(
                "in_count exceeds min(test_hits, k_in) somewhere: it must count the models "
                "that trained on the train example and got the test example right"
            )
        h_row = self._hit_row[tests]
        bins = np.empty(len(tests), dtype=np.uint8)
        if block.k is not None:
            table = self._table(block.k)
            bins[:] = table.bins[h_row, table.columns(in_count, h_row)]
        elif len(tests):
            order = np.argsort(k_in, kind="stable")
            values, starts = np.unique(k_in[order], return_index=True)
            for k, part in zip(values.tolist(), np.split(order, starts[1:]), strict=True):
                table = self._table(int(k))
                bins[part] = table.bins[h_row[part], table.columns(in_count[part], h_row[part])]
        return {
            "train": block.train[cols],
            "test": tests.astype(np.int32),
            "hits_in": in_count,
            "k_in": k_in.astype(np.int32),
            "bin": bins,
        }

    def observe(self, in_count: ArrayLike, k_in: ArrayLike, train_index: ArrayLike) -> None:
        """One chunk of train examples, in every pass (see :meth:`passes`).

        Args:
            in_count: (t, c) integer counts (numpy or torch, int32 best), test rows by train
                columns, as the influence scan computes them.
            k_in: (c,) models that trained on each train example; columns with 0 or K are
                undefined (not tests) and skipped.
            train_index: (c,) global train indices of the columns.
        """
        self._check_open()
        if self._mode == "done":
            raise RuntimeError("no further pass is needed: call result()")
        blocks = self._blocks(in_count, k_in, train_index)
        if self._mode == "collect":
            for block in blocks:
                self._collect(self._extract_pairs(block, self._collect_to), block.x.size)
            return
        fine = np.zeros(self._extract + 1, dtype=np.int64)
        coarse = np.zeros(len(self._coarse), dtype=np.int64)
        extracted = []
        for block in blocks:
            records = self._extract_pairs(block, self._extract)
            fine += np.bincount(records["bin"], minlength=self._extract + 1)
            for i, level in enumerate(self._coarse):
                coarse[i] += np.count_nonzero(block.x >= self._block_threshold(block, level))
            extracted.append(records)
        keep = self._count(fine, coarse, sum(block.x.size for block in blocks))
        for records in extracted:
            chosen = records["bin"] <= keep
            if chosen.any():
                self._keep(_take(records, chosen))

    def result(self) -> PairDiscoveries:
        """The rejected pairs with exact p- and q-values, and their counts."""
        records, p, q = self._resolve()
        empty = np.empty(0, dtype=np.int64)
        k_in = records.get("k_in", empty).astype(np.int64)
        hits_in = records.get("hits_in", empty).astype(np.int64)
        test = records.get("test", empty).astype(np.int64)
        return PairDiscoveries(
            train=records.get("train", empty),
            test=self.test_index[test],
            p=p,
            q=q,
            hits_in=hits_in,
            k_in=k_in,
            hits_out=self.test_hits[test] - hits_in,
            k_out=self.n_models - k_in,
            n_tests=self.n_tests,
            level=self.level,
            method=self.method,
            cutoff=float(p[-1]) if len(p) else float("nan"),
        )

    def pvalues(self, in_count: ArrayLike, k_in: ArrayLike, test: ArrayLike) -> np.ndarray:
        """The p-values this procedure uses, for pairs given by their counts and test rows
        (1-D arrays of one length): the table's where the pair's bin is in (e_0, q],
        :func:`hypergeom_upper_tail` elsewhere (capped at e_0 below the band, raised above q
        above it, so that every p-value agrees with its bin). They equal
        :func:`fisher_pvalues` to ~1e-13 relative."""
        x = np.asarray(in_count, dtype=np.int64).ravel()
        k = np.asarray(k_in, dtype=np.int64).ravel()
        test = np.asarray(test, dtype=np.int64).ravel()
        if not (len(x) == len(k) == len(test)):
            raise DataError("in_count, k_in and test must have one length")
        if len(test) and (test.min() < 0 or test.max() >= len(self.test_hits)):
            raise DataError(f"test must hold test rows in [0, {len(self.test_hits)})")
        if ((k < 1) | (k >= self.n_models)).any():
            raise DataError(f"k_in must lie in [1, n_models - 1 = {self.n_models - 1}]")
        h = self.test_hits[test]
        if ((x < np.maximum(0, h + k - self.n_models)) | (x > np.minimum(h, k))).any():
            raise DataError("in_count must lie in [max(0, hits + k_in - K), min(hits, k_in)]")
        p = np.empty(len(x))
        above = np.nextafter(self.grid[-1], 1.0)
        for value in np.unique(k):
            chosen = np.flatnonzero(k == value)
            # the rows needed of this k's table, in the window of the full table
            rows, row = np.unique(self._hit_row[test[chosen]], return_inverse=True)
            full = self._table(int(value))
            table = _BinTable(
                self.n_models, int(value), self._hit_values[rows], self.grid, full.window
            )
            column = table.columns(x[chosen], row)
            p[chosen] = table.pvalues[row, column]
            outside = np.isnan(p[chosen])  # beyond the band: sum the tail, agree with the bin
            if outside.any():
                where = chosen[outside]
                tail = hypergeom_upper_tail(
                    x[where], np.full(len(where), self.n_models), h[where], k[where]
                )
                bins = table.bins[row[outside], column[outside]]
                tail = np.where(bins == 0, np.minimum(tail, self.grid[0]), tail)
                p[where] = np.where(bins == self.n_bins, np.maximum(tail, above), tail)
        return p

    def _pvalues(self, records: dict[str, np.ndarray]) -> np.ndarray:
        if "test" not in records:
            return np.empty(0)
        return self.pvalues(records["hits_in"], records["k_in"], records["test"])

    def _tiebreak(self, records: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        empty = np.empty(0, dtype=np.int64)
        return records.get("train", empty), records.get("test", empty)
