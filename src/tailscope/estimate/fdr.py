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
  chunk of c train examples, and finds each pair's p-value class in a table (no special
  function per pair).

Both histogram the p-values of every chunk on a fine log grid (pass 1) and keep the tests in
the lowest bins, as many as ``max_kept``. The grid brackets the BH cutoff: a bin
``(e_{g-1}, e_g]`` can hold a rejected p-value only if ``e_{g-1} < q R(e_g) / (c N)``, where
``R(e)`` counts the p-values ``<= e``, so every rejection lies at or below the largest such
bin's upper edge. If the tests kept reach that edge, one pass was enough; otherwise
``needs_second_pass`` is true and a second pass over the same chunks (``collect``) gathers
the tests up to it. Among those, sorted, the ranks are the global ranks, so the rejections
and their q-values are exactly those of the dense procedure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from scipy.special import digamma

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


# --- dense -----------------------------------------------------------------------------------


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise DataError(f"method must be one of {METHODS}, got {method!r}")
    return str(method)


def _check_level(q: object) -> float:
    try:
        value = float(q)
    except (TypeError, ValueError):
        raise DataError(f"q must be a number in (0, 1), got {q!r}") from None
    if not 0.0 < value < 1.0:
        raise DataError(f"q must be in (0, 1), got {value}")
    return value


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
    """Histogram, kept tests and bracket shared by the two streaming procedures.

    Bins: ``edges`` e_0 < ... < e_{G-1} = q, geometric (``bins_per_decade`` per decade over
    ``decades`` decades). A p-value is in bin 0 if ``p <= e_0``, in bin g if
    ``e_{g-1} < p <= e_g``, in bin G if ``p > q`` (never rejected: every BH/BY cutoff is
    <= q). Subclasses turn their chunks into bins and records (dicts of equal-length arrays
    with a ``"bin"`` entry) and give the records' p-values at the end.
    """

    def __init__(
        self, q: float, method: str, bins_per_decade: int, decades: int, max_kept: int
    ) -> None:
        self.level = _check_level(q)
        self.method = _check_method(method)
        for name, value in (("bins_per_decade", bins_per_decade), ("decades", decades)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise DataError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(max_kept, bool) or not isinstance(max_kept, int | np.integer):
            raise DataError(f"max_kept must be a non-negative integer, got {max_kept!r}")
        if max_kept < 0:
            raise DataError(f"max_kept must be >= 0, got {max_kept}")
        n_edges = int(bins_per_decade) * int(decades) + 1
        if n_edges > 255:
            raise DataError(
                f"bins_per_decade * decades must be <= 254 (bins fit a byte), got {n_edges - 1}"
            )
        exponents = (np.arange(n_edges) - (n_edges - 1)) / bins_per_decade
        self.edges = self.level * 10.0**exponents
        self.edges[-1] = self.level
        if self.edges[0] < _LOWEST_EDGE:
            raise DataError(
                f"the lowest bin edge q * 10**-decades = {self.edges[0]:.3g} must be >= "
                f"{_LOWEST_EDGE:g}; use fewer decades"
            )
        self.n_bins = n_edges  # G: bins 0..G-1 below q, bin G above
        self.max_kept = int(max_kept)
        self.histogram = np.zeros(n_edges + 1, dtype=np.int64)
        self.n_tests = 0
        self._keep_bin = n_edges - 1  # the kept records are exactly the tests in bins <= it
        self._kept: list[dict[str, np.ndarray]] = []
        self._kept_histogram = np.zeros(n_edges + 1, dtype=np.int64)
        self._phase = "observe"
        self._last_bin: int | None = None
        self._collected: list[dict[str, np.ndarray]] = []

    # pass 1 ------------------------------------------------------------------------------

    def _check_observing(self) -> None:
        if self._phase != "observe":
            raise RuntimeError(
                "observe() is pass 1 and must come before needs_second_pass, collect() and "
                "result(); start a new object for a new family"
            )

    def _count(self, histogram: np.ndarray, n_tests: int) -> int:
        """Add a chunk's bin counts; return the bin up to which its tests are to be kept."""
        self.histogram += histogram
        self.n_tests += int(n_tests)
        combined = np.cumsum(self._kept_histogram + histogram)
        if combined[self._keep_bin] > self.max_kept:
            fits = np.flatnonzero(combined[: self._keep_bin + 1] <= self.max_kept // 2)
            self._keep_bin = int(fits[-1]) if len(fits) else -1
            self._kept = [_take(r, r["bin"] <= self._keep_bin) for r in self._kept]
            self._kept_histogram[self._keep_bin + 1 :] = 0
        return self._keep_bin

    def _keep(self, records: dict[str, np.ndarray]) -> None:
        self._kept.append(records)
        self._kept_histogram += np.bincount(records["bin"], minlength=self.n_bins + 1)

    # bracket -----------------------------------------------------------------------------

    @property
    def last_bin(self) -> int:
        """The highest bin that can hold a rejection (-1: nothing is rejected); ends pass 1."""
        if self._last_bin is None:
            if self._phase == "observe":
                self._phase = "observed"
            factor = dependence_factor(self.method, self.n_tests)
            below = np.cumsum(self.histogram[: self.n_bins])  # R(e_g)
            lower = np.concatenate([[0.0], self.edges[:-1]])  # e_{g-1}
            possible = lower * factor * self.n_tests < (
                self.level * below * (1.0 + _BRACKET_SLACK)
            )
            possible &= below > 0
            hits = np.flatnonzero(possible)
            self._last_bin = int(hits[-1]) if len(hits) else -1
        return self._last_bin

    @property
    def collect_below(self) -> float:
        """The p-value up to which tests must be collected (the bracket's upper edge; 0 when
        nothing is rejected)."""
        last = self.last_bin
        return float(self.edges[last]) if last >= 0 else 0.0

    @property
    def needs_second_pass(self) -> bool:
        """Whether pass 1 kept too few tests, so that ``collect`` must see every chunk again
        (in any order, each once). Ends pass 1."""
        return self.last_bin > self._keep_bin

    # pass 2 ------------------------------------------------------------------------------

    def _start_collecting(self) -> int:
        last = self.last_bin
        if self._phase == "done":
            raise RuntimeError("result() was already called; start a new object")
        if self._phase != "collect":
            self._phase = "collect"
            self._collected = []
            self._kept = []
        return last

    # result ------------------------------------------------------------------------------

    def _resolve(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, float]:
        """The rejected records, their p- and q-values, and the BH/BY factor."""
        last = self.last_bin
        if self._phase == "collect":
            parts = self._collected
        elif last > self._keep_bin:
            raise RuntimeError("needs_second_pass is true: call collect() on every chunk first")
        else:
            parts = self._kept
        self._phase = "done"
        records = _concat([_take(r, r["bin"] <= last) for r in parts])
        expected = int(self.histogram[: last + 1].sum()) if last >= 0 else 0
        if len(records["bin"]) != expected:
            raise RuntimeError(
                f"collect() saw {len(records['bin'])} tests at or below the bracket where "
                f"observe() counted {expected}: pass 2 must see exactly the chunks of pass 1"
            )
        p = self._pvalues(records)
        order = np.lexsort((*self._tiebreak(records), p))
        records, p = _take(records, order), p[order]
        factor = dependence_factor(self.method, self.n_tests)
        q = _adjusted(p, self.n_tests, factor)
        rejected = q <= self.level
        return _take(records, rejected), p[rejected], q[rejected], factor

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

    Pass 1: ``observe(p, ids)`` for every chunk. If ``needs_second_pass``, pass 2:
    ``collect(p, ids)`` for every chunk again (same chunks, any order). Then ``result()``.
    Memory: the histogram plus at most ``max_kept`` kept tests (then the collected ones).

    Args:
        q: FDR level in (0, 1).
        method: ``"bh"`` (independent or positively dependent tests) or ``"by"`` (any
            dependence).
        bins_per_decade, decades: the log grid below q (at most 254 bins).
        max_kept: tests kept in pass 1 (~17 bytes each); if the rejections fit below the
            kept bins, no second pass is needed.
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
        super().__init__(q, method, bins_per_decade, decades, max_kept)
        self._offset = 0

    def _chunk(self, p: ArrayLike, ids: ArrayLike | None) -> tuple[np.ndarray, ...]:
        p = _check_pvalues(p).ravel()
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
        return p, ids, np.searchsorted(self.edges, p, side="left").astype(np.uint8)

    def observe(self, p: ArrayLike, ids: ArrayLike | None = None) -> None:
        """Pass 1 over one chunk: ``p`` any shape (NaN = no test), ``ids`` integer ids of the
        same size (default: running positions over all chunks, NaN included)."""
        self._check_observing()
        p, ids, bins = self._chunk(p, ids)
        keep = self._count(np.bincount(bins, minlength=self.n_bins + 1), len(p))
        chosen = bins <= keep
        if chosen.any():
            self._keep({"index": ids[chosen], "p": p[chosen], "bin": bins[chosen]})

    def collect(self, p: ArrayLike, ids: ArrayLike | None = None) -> None:
        """Pass 2 over one chunk (only when ``needs_second_pass``); arguments as in pass 1."""
        if self._phase != "collect":
            self._offset = 0
        last = self._start_collecting()
        p, ids, bins = self._chunk(p, ids)
        chosen = bins <= last
        if chosen.any():
            self._collected.append({"index": ids[chosen], "p": p[chosen], "bin": bins[chosen]})

    def result(self) -> Discoveries:
        """The rejected tests with exact p- and q-values (those of :func:`bh_qvalues`)."""
        records, p, q, _ = self._resolve()
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
    """For one ``k_in``: the p-value bin of every (test hits h, in_count x), as a gather.

    Row r (one distinct h) covers the band of x whose p-value lies in (e_0, q]:
    ``x_top[r] <= x < x_top[r] + width``. Column 0 stands for every x below the band
    (p > q: bin G), column ``1 + x - x_top[r]`` for x in it, column ``width + 1`` for every
    x above it (p <= e_0: bin 0). So ``bins[r, clip(x - x_top[r] + 1, 0, width + 1)]`` is
    the bin of x. ``pvalues`` (same layout, NaN outside the band) holds the p-values the
    bins came from; it is rebuilt, bit for bit, when needed.
    """

    def __init__(self, n_models: int, k: int, hits: np.ndarray, edges: np.ndarray) -> None:
        self.k = k
        top = edges[-1]
        below = 1
        x_min = np.maximum(0, hits + k - n_models)
        while True:  # the window must start above the band (p > q there)
            start, tail = hypergeom_tail_window(n_models, k, hits, below_mean=below)
            if not ((tail[:, 0] <= top) & (start > x_min)).any():
                break
            below = 2 * below + 8
        n_above = np.count_nonzero(tail > top, axis=1)  # cells with p > q
        n_band = np.count_nonzero(tail > edges[0], axis=1) - n_above
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
        self.bins[:, 0] = len(edges)
        self.bins[:, 1:-1] = np.where(inside, np.searchsorted(edges, band, side="left"), 0)

    def columns(self, in_count: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Table columns of counts ``in_count`` of table rows ``row`` (1-D, same length)."""
        return np.clip(in_count - self.x_top[row] + 1, 0, self.width + 1)


class InfluenceFDR(_StreamingCore):
    """BH/BY with one-sided Fisher p-values over every defined (train, test) influence pair,
    fed the influence scan's exact counts chunk by chunk.

    For a chunk of c train examples the scan has ``in_count`` (t, c): ``in_count[j, r]`` of
    the ``k_in[r]`` models that trained on train example r got test example j right; with
    ``test_hits[j]`` models right on j in all, the pair's p-value is ``P(X >= in_count)``,
    ``X ~ Hypergeometric(n_models, test_hits[j], k_in[r])`` (as :func:`fisher_pvalues`, to
    ~1e-13 relative). The family is every pair of a defined train example (``0 < k_in <
    n_models``) with every test example.

    Pass 1 costs, per pair, one gather-free index computation and one count (bincount) into
    a table per distinct ``k_in`` (built once, ~10-30 ms each at K = 2000-4000; ~100-200
    distinct values). Chunks whose ``k_in`` are sorted (train rows ordered by ``k_in``) avoid
    a column copy.

    Usage::

        fdr = InfluenceFDR(n_models, test_hits, q=0.1)
        for rows in chunks:                     # pass 1
            fdr.observe(in_count, k_in, train_index)
        if fdr.needs_second_pass:               # rarely: more rejections than max_kept/2
            for rows in chunks:                 # pass 2, same chunks
                fdr.collect(in_count, k_in, train_index)
        found = fdr.result()                    # PairDiscoveries

    Args:
        n_models: K.
        test_hits: (t,) models that got each test example right.
        q, method, bins_per_decade, decades, max_kept: as in :class:`StreamingBH` (a kept
            pair takes ~25 bytes).
        test_index: (t,) ids of the test rows of ``in_count`` (default 0..t-1).
    """

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
        super().__init__(q, method, bins_per_decade, decades, max_kept)
        if isinstance(n_models, bool) or not isinstance(n_models, int | np.integer):
            raise DataError(f"n_models must be an integer >= 2, got {n_models!r}")
        if n_models < 2:
            raise DataError(f"n_models must be >= 2, got {n_models}")
        self.n_models = int(n_models)
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
        self._gather: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # tables --------------------------------------------------------------------------------

    def _table(self, k: int) -> _BinTable:
        table = self._tables.get(k)
        if table is None:
            table = _BinTable(self.n_models, k, self._hit_values, self.edges)
            table.pvalues = None  # rebuilt for the few k needed at the end
            self._tables[k] = table
            stride = table.width + 2
            shift = torch.from_numpy((1 - table.x_top[self._hit_row]).astype(np.int32))
            base = torch.from_numpy((self._hit_row * stride).astype(np.int32))
            self._gather[k] = (shift[:, None], base[:, None])
        return table

    # chunks --------------------------------------------------------------------------------

    def _groups(self, in_count: ArrayLike, k_in: ArrayLike, train_index: ArrayLike):
        """Yield (k, x (t, g) int32 tensor, train ids (g,)) per distinct defined k_in."""
        counts = torch.as_tensor(in_count)
        if counts.ndim != 2 or counts.shape[0] != len(self.test_hits):
            raise DataError(
                f"in_count must be (t, c) with t = {len(self.test_hits)} test rows, got "
                f"{tuple(counts.shape)}"
            )
        if counts.dtype != torch.int32:
            if counts.dtype.is_floating_point or counts.dtype == torch.bool:
                raise DataError(f"in_count must hold integer counts, not {counts.dtype}")
            counts = counts.to(torch.int32)
        if counts.device.type != "cpu":
            counts = counts.cpu()
        k_in = np.asarray(k_in)
        train = np.asarray(train_index)
        c = counts.shape[1]
        if k_in.shape != (c,) or not np.issubdtype(k_in.dtype, np.integer):
            raise DataError(f"k_in must hold {c} integers (one per column of in_count)")
        if train.shape != (c,) or not np.issubdtype(train.dtype, np.integer):
            raise DataError(f"train_index must hold {c} integers (one per column of in_count)")
        k_in, train = k_in.astype(np.int64), train.astype(np.int64)
        defined = (k_in > 0) & (k_in < self.n_models)
        order = np.argsort(k_in, kind="stable")
        order = order[defined[order]]
        if not len(order):
            return
        values, starts = np.unique(k_in[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        in_place = np.array_equal(order, np.arange(order[0], order[0] + len(order)))
        for k, a, b in zip(values.tolist(), starts.tolist(), ends.tolist(), strict=True):
            cols = order[a:b]
            if in_place:
                x = counts[:, int(cols[0]) : int(cols[-1]) + 1]
            else:
                x = counts[:, torch.from_numpy(cols)]
            yield int(k), x, train[cols]

    def _bins_counted(self, k: int, x: torch.Tensor) -> np.ndarray:
        """Histogram of the bins of a (t, g) block with common k."""
        table = self._table(k)
        shift, base = self._gather[k]
        cells = torch.add(x, shift)
        cells.clamp_(0, table.width + 1)
        cells.add_(base)
        counts = torch.bincount(cells.view(-1), minlength=table.bins.size).numpy()
        return np.bincount(table.bins.ravel(), weights=counts, minlength=self.n_bins + 1)

    def _records(
        self, k: int, x: torch.Tensor, train: np.ndarray, up_to: int
    ) -> dict[str, np.ndarray] | None:
        """The pairs of a (t, g) block whose bin is <= ``up_to``, as records."""
        table = self._table(k)
        # bins fall as x grows: the first column of each table row at or below ``up_to``
        first = np.argmax(table.bins[:, 1:] <= up_to, axis=1)  # column width+1 is bin 0
        threshold = torch.from_numpy((table.x_top + first)[self._hit_row])
        rows = torch.nonzero(x.amax(dim=1) >= threshold).squeeze(1)
        if not len(rows):
            return None
        hit_rows, cols = torch.nonzero(x[rows] >= threshold[rows, None], as_tuple=True)
        tests = rows[hit_rows].numpy()
        cols = cols.numpy()
        in_count = x[rows[hit_rows], torch.from_numpy(cols)].numpy().astype(np.int64)
        h_row = self._hit_row[tests]
        bins = table.bins[h_row, table.columns(in_count, h_row)]
        return {
            "train": train[cols],
            "test": tests.astype(np.int64),
            "hits_in": in_count,
            "k_in": np.full(len(tests), k, dtype=np.int64),
            "bin": bins,
        }

    def _check_bounds(self, k: int, x: torch.Tensor) -> None:
        top = np.minimum(self.test_hits, k)
        if (x.amax(dim=1).numpy() > top).any():
            raise DataError(
                "in_count exceeds min(test_hits, k_in) somewhere: it must count the models "
                "that trained on the train example and got the test example right"
            )

    def observe(self, in_count: ArrayLike, k_in: ArrayLike, train_index: ArrayLike) -> None:
        """Pass 1 over one chunk of train examples.

        Args:
            in_count: (t, c) integer counts (numpy or CPU torch, int32 best), test rows by
                train columns, as the influence scan computes them.
            k_in: (c,) models that trained on each train example; columns with 0 or K are
                undefined (not tests) and skipped.
            train_index: (c,) global train indices of the columns.
        """
        self._check_observing()
        groups = list(self._groups(in_count, k_in, train_index))
        histogram = np.zeros(self.n_bins + 1)
        n_tests = 0
        for k, x, _ in groups:
            self._check_bounds(k, x)
            histogram += self._bins_counted(k, x)
            n_tests += x.numel()
        keep = self._count(np.rint(histogram).astype(np.int64), n_tests)
        if keep < 0:
            return
        for k, x, train in groups:
            records = self._records(k, x, train, keep)
            if records is not None:
                self._keep(records)

    def collect(self, in_count: ArrayLike, k_in: ArrayLike, train_index: ArrayLike) -> None:
        """Pass 2 over one chunk (only when ``needs_second_pass``); arguments as in pass 1."""
        last = self._start_collecting()
        if last < 0:
            return
        for k, x, train in self._groups(in_count, k_in, train_index):
            records = self._records(k, x, train, last)
            if records is not None:
                self._collected.append(records)

    def result(self) -> PairDiscoveries:
        """The rejected pairs with exact p- and q-values, and their counts."""
        records, p, q, _ = self._resolve()
        empty = np.empty(0, dtype=np.int64)
        k_in = records.get("k_in", empty)
        hits_in = records.get("hits_in", empty)
        test = records.get("test", empty)
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
        :func:`hypergeom_upper_tail` elsewhere (capped at e_0 below the band, floored above
        q above it, so that every p-value agrees with its bin)."""
        x = np.asarray(in_count, dtype=np.int64).ravel()
        k = np.asarray(k_in, dtype=np.int64).ravel()
        test = np.asarray(test, dtype=np.int64).ravel()
        if not (len(x) == len(k) == len(test)):
            raise DataError("in_count, k_in and test must have one length")
        h = self.test_hits[test]
        p = hypergeom_upper_tail(x, np.full(len(x), self.n_models), h, k)
        for value in np.unique(k):
            chosen = np.flatnonzero(k == value)
            table = _BinTable(self.n_models, int(value), self._hit_values, self.edges)
            row = self._hit_row[test[chosen]]
            column = table.columns(x[chosen], row)
            from_table = table.pvalues[row, column]
            bins = table.bins[row, column]
            p_chosen = p[chosen]
            p_chosen = np.where(bins == 0, np.minimum(p_chosen, self.edges[0]), p_chosen)
            above = np.nextafter(self.edges[-1], 1.0)
            p_chosen = np.where(bins == self.n_bins, np.maximum(p_chosen, above), p_chosen)
            p[chosen] = np.where(np.isnan(from_table), p_chosen, from_table)
        return p

    def _pvalues(self, records: dict[str, np.ndarray]) -> np.ndarray:
        if "test" not in records:
            return np.empty(0)
        return self.pvalues(records["hits_in"], records["k_in"], records["test"])

    def _tiebreak(self, records: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        empty = np.empty(0, dtype=np.int64)
        return records.get("train", empty), records.get("test", empty)
