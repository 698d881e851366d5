"""Held-out influence of train examples on test examples, computed in chunks of train rows.

For K models with subset masks ``M`` (K, n) and test correctness ``C`` (K, t)::

    infl[i, j] = mean_k(C[k, j] | M[k, i]) - mean_k(C[k, j] | not M[k, i])

Both means come from one matrix product per chunk of train rows: ``in_count = M[:, rows]^T C``
counts the models that had example i in their subset and got test example j right (exact:
0/1 products summed in int32, or in float32 below 2**24 models), and
``out_count = C.sum(0) - in_count``. The full (n, t) matrix can be huge (MNIST: 60k x 10k
floats = 2.4 GB), so only what the caller asks for is kept: the top-k train examples of every
test example, the pairs above a threshold, or, only when asked, the dense matrix in a ``.npy``
on disk. Memory stays about ``chunk_size * t + K * t`` numbers whatever n is.

Findings: with ``fdr=q`` the pairs kept are those that Benjamini-Hochberg (or Benjamini-
Yekutieli) at level q declares positive over *every* defined (train, test) pair, each tested
by the one-sided exact Fisher test of ``infl > 0`` (:class:`~tailscope.estimate.fdr.
InfluenceFDR`, streamed over the same chunks: no n x t array of p-values), and whose
estimate reaches ``threshold``. With ``fdr=None`` the pairs are the paper's: every estimate
>= ``threshold``, each with its p-value (and no q-value).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from tailscope._checks import check_device, check_positions, check_scalar
from tailscope.errors import DataError
from tailscope.estimate._validation import (
    as_bool,
    as_matrix,
    check_binary,
    check_chunk_size,
    check_same_models,
    column_chunks,
    warn_undefined,
)
from tailscope.estimate.fdr import InfluenceFDR, PairDiscoveries
from tailscope.estimate.intervals import difference_interval
from tailscope.estimate.memorization import standard_error
from tailscope.estimate.significance import fisher_pvalues

__all__ = ["InfluenceResult", "Pairs", "TopK", "influence"]

# A chunk's top-k candidates are the entries >= the k-th largest value of their test row;
# with more than this many times k * t of them (heavy ties), the chunk is ranked exactly.
_MAX_TIE_FACTOR = 8
# torch._int_mm needs more than 16 rows on its left (on CPU it returns garbage for 1 row).
_INT_MM_MIN_ROWS = 17


@dataclass(frozen=True, eq=False)
class TopK:
    """The k most influential train examples of every test example, most influential first.

    Ties in influence go to the lower train position. Where fewer than k train examples have
    an estimate, the row is padded with position -1 and NaN value and standard error.

    Attributes:
        train_pos: (t, k) int64 train positions (rows of the masks' columns).
        value: (t, k) float32 influence.
        se: (t, k) float32 standard error of the influence.
    """

    train_pos: np.ndarray
    value: np.ndarray
    se: np.ndarray


@dataclass(frozen=True, eq=False)
class Pairs:
    """The kept (train, test) pairs: with influence >= a threshold, and with ``fdr`` the
    Benjamini-Hochberg findings among them.

    Sorted by test position, then influence (largest first), then train position.

    Attributes:
        train_pos: (p,) int64 train positions.
        test_pos: (p,) int64 test positions.
        infl: (p,) float32 influence.
        se: (p,) float32 standard error of the influence (0 where both rates are 0 or 1:
            use the interval).
        p: (p,) float64 one-sided exact Fisher p-value of ``infl > 0``.
        q: (p,) float64 BH/BY q-value over every defined pair (NaN without ``fdr``).
        low, high: (p,) float64 confidence interval of the influence (Agresti-Caffo).
    """

    train_pos: np.ndarray
    test_pos: np.ndarray
    infl: np.ndarray
    se: np.ndarray
    p: np.ndarray
    q: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def __len__(self) -> int:
        return len(self.train_pos)

    @classmethod
    def empty(cls) -> Pairs:
        positions, values = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return cls(
            positions,
            positions,
            values.astype(np.float32),
            values.astype(np.float32),
            values,
            values,
            values,
            values,
        )

    def take(self, keep: np.ndarray) -> Pairs:
        """The pairs at ``keep`` (a boolean mask or positions), in that order."""
        return Pairs(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    def to_frame(self) -> pd.DataFrame:
        """The pairs as a DataFrame: ``train_pos, test_pos, infl, infl_se, infl_low,
        infl_high, p, q``."""
        return pd.DataFrame(
            {
                "train_pos": self.train_pos,
                "test_pos": self.test_pos,
                "infl": self.infl,
                "infl_se": self.se,
                "infl_low": self.low,
                "infl_high": self.high,
                "p": self.p,
                "q": self.q,
            }
        )


@dataclass(frozen=True, eq=False)
class InfluenceResult:
    """What :func:`influence` was asked to keep.

    Attributes:
        train_pos: (r,) int64 train positions considered, in the order of the rows of ``dense``.
        top_k: the most influential train examples of every test example, if asked.
        pairs: the pairs above the threshold (the findings, with ``fdr``), if asked.
        dense: (r, t) float32 memory-mapped influence matrix (NaN rows for examples without
            an estimate), if asked.
        n_tests: with ``fdr``, the size of the family: every defined (train, test) pair.
        cutoff: with ``fdr``, the largest p-value declared a finding (NaN if none): the
            per-test level BH reached.
    """

    train_pos: np.ndarray
    top_k: TopK | None = None
    pairs: Pairs | None = None
    dense: np.memmap | None = None
    n_tests: int | None = None
    cutoff: float = float("nan")

    def __repr__(self) -> str:
        kept = [f"train_pos=({len(self.train_pos)},)"]
        if self.top_k is not None:
            kept.append(f"top_k={self.top_k.train_pos.shape}")
        if self.pairs is not None:
            kept.append(f"pairs={len(self.pairs)}")
        if self.dense is not None:
            kept.append(f"dense={self.dense.shape} at {self.dense.filename!r}")
        return f"InfluenceResult({', '.join(kept)})"


def influence(
    masks: ArrayLike,
    correct_test: ArrayLike,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    fdr: float | None = None,
    method: str = "bh",
    confidence: float = 0.95,
    train_pos: ArrayLike | None = None,
    dense_path: str | os.PathLike | None = None,
    chunk_size: int = 2048,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> InfluenceResult:
    """Influence of train examples on test examples, chunked over train rows.

    Args:
        masks: (K, n) bool or 0/1, ``masks[k, i]`` = train example i was in model k's subset.
            May be a memory-mapped array; it is read one chunk of columns at a time.
        correct_test: (K, t) bool or 0/1, model k classifies test example j correctly.
        top_k: keep the ``top_k`` most influential train examples of every test example.
        threshold: keep every pair with influence >= ``threshold`` (with ``fdr``: every
            finding that large).
        fdr: keep only findings: the pairs Benjamini-Hochberg at this level declares
            ``infl > 0`` over every defined pair of the rows considered (see the module
            docstring). None: the paper's plain threshold.
        method: ``"bh"``, or ``"by"`` (Benjamini-Yekutieli, valid under any dependence).
        confidence: level of the pairs' confidence intervals.
        train_pos: (r,) train positions to consider (default: all n); outputs still name
            global train positions.
        dense_path: write the full (r, t) float32 matrix to this ``.npy`` file and return it
            memory-mapped.
        chunk_size: train rows per chunk.
        device: torch device of the matrix products (default CPU).
        progress: show a progress bar over chunks.

    Returns:
        An :class:`InfluenceResult`. Train examples that were in every subset or in none have
        no estimate: they are left out of ``top_k`` and ``pairs`` (and of the family), are
        NaN in ``dense``, and one :class:`UndefinedEstimateWarning` says how many there were.
    """
    masks = as_matrix(masks, "masks")
    correct_test = as_matrix(correct_test, "correct_test")
    check_same_models(masks, correct_test, "correct_test")
    n_models, n_train = masks.shape
    n_test = correct_test.shape[1]
    rows = _check_train_index(train_pos, n_train)
    top_k = _check_top_k(top_k, n_train)
    threshold = _check_threshold(threshold)
    if fdr is not None:
        fdr = check_scalar(fdr, "fdr", float, min_val=0, max_val=1, inclusive=False)
    chunk_size = check_chunk_size(chunk_size)
    if top_k is None and threshold is None and fdr is None and dense_path is None:
        raise DataError("influence needs at least one of top_k, threshold, fdr or dense_path")
    device = check_device("cpu" if device is None else device)
    check_binary(masks, "masks", max(1, 2**24 // n_models))
    correct = as_bool(np.asarray(correct_test), "correct_test")
    test_hits = correct.sum(axis=0, dtype=np.int64)
    finder = None if fdr is None else InfluenceFDR(n_models, test_hits, q=fdr, method=method)

    n_rows = len(rows)
    # Rows in order of k_in make the FDR's per-k_in tables apply to whole column blocks.
    scan = np.arange(n_rows) if finder is None else _by_subset_count(masks, rows)
    contiguous = train_pos is None and finder is None
    chunk_influence = _ChunkInfluence(correct, min(chunk_size, n_rows), device)
    dense = None
    if dense_path is not None:
        dense = np.lib.format.open_memmap(
            os.fspath(dense_path), mode="w+", dtype=np.float32, shape=(n_rows, n_test)
        )
    running_top_k = _RunningTopK(top_k) if top_k is not None else None
    pair_chunks: list[_Entries] = []
    n_undefined = 0

    for scan_pass in finder.passes() if finder is not None else [0]:
        for chunk in tqdm(
            column_chunks(n_rows, chunk_size),
            total=-(-n_rows // chunk_size),
            desc="influence" if not scan_pass else f"influence, FDR pass {scan_pass + 1}",
            unit="chunk",
            disable=not progress,
        ):
            positions = scan[chunk]  # positions into rows
            chunk_rows = rows[positions]
            block = masks[:, chunk] if contiguous else masks[:, chunk_rows]
            in_subset = as_bool(block, "masks")  # (K, c)
            k_in = in_subset.view(np.uint8).sum(axis=0, dtype=np.int64)
            defined = (k_in > 0) & (k_in < n_models)
            if not defined.all():
                if not scan_pass:
                    n_undefined += int(np.count_nonzero(~defined))
                if dense is not None:
                    dense[positions[~defined]] = np.nan
                in_subset, chunk_rows, k_in = (
                    in_subset[:, defined],
                    chunk_rows[defined],
                    k_in[defined],
                )
                if not len(chunk_rows):
                    continue

            # Both (t, c): test examples along rows, this chunk's train examples along columns.
            in_count, infl = chunk_influence(in_subset, k_in)
            if finder is not None:
                finder.observe(in_count, k_in, chunk_rows)
            if scan_pass:
                continue
            if dense is not None:
                dense[positions[defined]] = infl.cpu().numpy().T
            if running_top_k is not None:
                tests, columns = _top_candidates(infl, top_k, chunk_rows)
                running_top_k.add(_Entries.gather(infl, in_count, tests, columns, chunk_rows, k_in))
            if threshold is not None and finder is None:
                tests, columns = _at_least(infl, threshold)
                pair_chunks.append(
                    _Entries.gather(infl, in_count, tests, columns, chunk_rows, k_in)
                )

    if dense is not None:
        dense.flush()
    warn_undefined(n_undefined, n_rows, "influence")
    pairs, n_tests, cutoff = None, None, float("nan")
    if finder is not None:
        found = finder.result()
        entries = _Entries.from_discoveries(found)
        if threshold is not None:
            entries = entries.take(np.flatnonzero(entries.value >= threshold))
        pairs = _pairs(entries, n_models, test_hits, confidence)
        n_tests, cutoff = found.n_tests, found.cutoff
    elif threshold is not None:
        pairs = _pairs(_Entries.concat(pair_chunks), n_models, test_hits, confidence)
    return InfluenceResult(
        train_pos=rows,
        top_k=(
            running_top_k.result(n_test, n_models, test_hits) if running_top_k is not None else None
        ),
        pairs=pairs,
        dense=dense,
        n_tests=n_tests,
        cutoff=cutoff,
    )


def _by_subset_count(masks: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions into ``rows`` ordered by k_in, the number of models each row was in."""
    k_in = np.empty(len(rows), dtype=np.int64)
    step = max(1, 2**24 // masks.shape[0])
    for chunk in column_chunks(len(rows), step):
        k_in[chunk] = as_bool(masks[:, rows[chunk]], "masks").view(np.uint8).sum(axis=0)
    return np.argsort(k_in, kind="stable")


# --- argument checks ------------------------------------------------------------------------


def _check_train_index(train_pos: ArrayLike | None, n_train: int) -> np.ndarray:
    if train_pos is None:
        return np.arange(n_train, dtype=np.int64)
    return check_positions(train_pos, n_train, "train_pos", unique=True)


def _check_top_k(top_k: object, n_train: int) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer):
        raise DataError(f"top_k must be an integer in [1, {n_train}], got {top_k!r}")
    if not 1 <= top_k <= n_train:
        raise DataError(f"top_k must be in [1, {n_train}] (n_train), got {top_k}")
    return int(top_k)


def _check_threshold(threshold: object) -> float | None:
    if threshold is None:
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise DataError(f"threshold must be a number, got {threshold!r}") from None
    if not np.isfinite(value):
        raise DataError(f"threshold must be finite, got {value}")
    return value


# --- one chunk ------------------------------------------------------------------------------


class _ChunkInfluence:
    """Counts and influence of one chunk of train rows against every test example.

    ``in_count[j, r] = sum_k C[k, j] M[k, r]`` is exact: int8 products summed in int32 by
    ``torch._int_mm`` on CPU (~2x the float32 speed), float32 elsewhere (exact below 2**24
    models, as every partial sum is a small integer). Then, with ``K_in[r] = sum_k M[k, r]``::

        infl[j, r] = in_count[j, r] / K_in[r] - (hits[j] - in_count[j, r]) / (K - K_in[r])

    in float32. The (t, c) layout puts each test example's candidates in one contiguous row,
    which makes the top-k per test example ~2x faster. The outputs live in buffers allocated
    once and reused by the next call (large fresh allocations page-fault on every chunk).
    """

    def __init__(self, correct: np.ndarray, max_rows: int, device: torch.device) -> None:
        n_models, self.n_test = correct.shape
        self.n_models = n_models
        self.device = device
        self.exact_int8 = device.type == "cpu" and hasattr(torch, "_int_mm")
        correct_tensor = torch.from_numpy(
            np.require(correct, requirements=["C", "W"]).view(np.int8)
        )
        if self.exact_int8:
            pad = max(0, _INT_MM_MIN_ROWS - self.n_test)
            self.correct = torch.nn.functional.pad(correct_tensor, (0, pad)).to(device)
        else:
            self.correct = correct_tensor.to(device, torch.float32)
        self.hits = self.correct[:, : self.n_test].sum(dim=0).to(torch.float32)[:, None]
        # Flat buffers, so that a (t, c) view of the first t * c entries is contiguous.
        count_rows = self.correct.shape[1]
        count_dtype = torch.int32 if self.exact_int8 else torch.float32
        self._counts = torch.empty(count_rows * max_rows, dtype=count_dtype, device=device)
        self._infl = torch.empty(self.n_test * max_rows, dtype=torch.float32, device=device)
        self._scratch = torch.empty(self.n_test * max_rows, dtype=torch.float32, device=device)

    def __call__(self, in_subset: np.ndarray, k_in: np.ndarray) -> tuple[torch.Tensor, ...]:
        """(K, c) bool masks of the chunk and their (c,) column sums -> (t, c) counts, infl."""
        n_rows = in_subset.shape[1]
        shape = (self.n_test, n_rows)
        # A chunk of a read-only memmap is copied (torch wants writable memory).
        in_subset = torch.from_numpy(np.require(in_subset, requirements=["C", "W"]).view(np.int8))
        if self.exact_int8:
            counts = self._counts[: self.correct.shape[1] * n_rows].view(-1, n_rows)
            torch._int_mm(self.correct.T, in_subset.to(self.device), out=counts)
            in_count = counts[: self.n_test]
        else:
            in_count = self._counts[: self.n_test * n_rows].view(shape)
            torch.matmul(self.correct.T, in_subset.to(self.device, torch.float32), out=in_count)
        k_in_row = torch.from_numpy(k_in).to(self.device, torch.float32)[None, :]
        infl = self._infl[: self.n_test * n_rows].view(shape).copy_(in_count)
        p_out = torch.sub(self.hits, infl, out=self._scratch[: self.n_test * n_rows].view(shape))
        p_out.div_(self.n_models - k_in_row)
        return in_count, infl.div_(k_in_row).sub_(p_out)


def _sort_keys(value: np.ndarray, train: np.ndarray) -> np.ndarray:
    """int64 keys ordered like (value, -train): a larger key is a larger value, or an equal
    value with a lower train index. ``value`` float32 without NaN, ``train`` in [0, 2**32)."""
    bits = (np.asarray(value, dtype=np.float32) + np.float32(0.0)).view(np.int32)  # no -0.0
    ordered = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits).astype(np.int64)
    return (ordered << 32) | (np.int64(0xFFFFFFFF) - train)


def _top_candidates(
    infl: torch.Tensor, k: int, chunk_rows: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """(test, column) positions in a (t, c) chunk that include each test's k best entries.

    Row by row: topk's k entries where the k-th largest value is not tied, else every entry
    >= the k-th largest value, ties included (the exact tie-break by train index happens
    later, on a few entries); with heavy ties the tied rows are ranked exactly by
    :func:`_sort_keys` instead.
    """
    n_rows = infl.shape[1]
    k = min(k, n_rows)
    if k == n_rows:  # every entry is a candidate
        return torch.ones_like(infl, dtype=torch.bool).nonzero(as_tuple=True)
    # The k + 1 largest, sorted: the k-th is tied with an entry left out iff it equals the
    # (k + 1)-th.
    best = torch.topk(infl, k + 1, dim=1, sorted=True)
    kth = best.values[:, k - 1 : k]  # (t, 1)
    tied = best.values[:, k] == kth[:, 0]  # (t,)
    untied = (~tied).nonzero().squeeze(1)
    tests = untied.repeat_interleave(k)
    columns = best.indices[untied, :k].reshape(-1)
    tied = tied.nonzero().squeeze(1)
    if not len(tied):
        return tests, columns
    rows = infl[tied]  # (r, c): the tied test examples only
    selected = rows >= kth[tied]
    if int(torch.count_nonzero(selected)) <= _MAX_TIE_FACTOR * k * len(tied):
        tied_rows, tied_columns = selected.nonzero(as_tuple=True)
        tied_tests = tied[tied_rows]
    else:
        keys = _sort_keys(rows.cpu().numpy(), chunk_rows[None, :])
        ranked = np.argpartition(~keys, k - 1, axis=1)[:, :k]
        tied_tests = tied.repeat_interleave(k)
        tied_columns = torch.from_numpy(ranked.ravel()).to(infl.device)
    return torch.cat([tests, tied_tests]), torch.cat([columns, tied_columns])


def _at_least(infl: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(test, column) positions of the entries >= ``threshold`` of a (t, c) chunk.

    Looks only in the rows whose maximum reaches it: a full ``nonzero`` pass costs ~3x a
    row-max, and pairs are rare."""
    rows = (infl.amax(dim=1) >= threshold).nonzero().squeeze(1)
    if not len(rows):
        empty = torch.empty(0, dtype=torch.int64, device=infl.device)
        return empty, empty
    hit_rows, columns = (infl[rows] >= threshold).nonzero(as_tuple=True)
    return rows[hit_rows], columns


# --- what is kept ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entries:
    """Selected (train, test) entries with the counts their standard errors need."""

    train: np.ndarray  # (p,) int64 global train index
    test: np.ndarray  # (p,) int64
    value: np.ndarray  # (p,) float32 influence
    in_count: np.ndarray  # (p,) int64 models with train in the subset and test correct
    k_in: np.ndarray  # (p,) int64 models with train in the subset
    q: np.ndarray | None = None  # (p,) float64 BH q-values, when they came from the FDR
    p: np.ndarray | None = None  # (p,) float64 p-values, likewise

    @classmethod
    def gather(
        cls,
        infl: torch.Tensor,
        in_count: torch.Tensor,
        tests: torch.Tensor,
        columns: torch.Tensor,
        chunk_rows: np.ndarray,
        k_in: np.ndarray,
    ) -> _Entries:
        """The entries at (tests, columns) of a chunk's (t, c) ``infl`` and ``in_count``."""
        local = columns.cpu().numpy()
        return cls(
            train=chunk_rows[local],
            test=tests.cpu().numpy().astype(np.int64),
            value=infl[tests, columns].cpu().numpy(),
            in_count=in_count[tests, columns].cpu().numpy().astype(np.int64),
            k_in=k_in[local],
        )

    @classmethod
    def from_discoveries(cls, found: PairDiscoveries) -> _Entries:
        """The findings of :class:`InfluenceFDR`, with their exact p- and q-values."""
        return cls(
            train=found.train.astype(np.int64),
            test=found.test.astype(np.int64),
            value=found.infl.astype(np.float32),
            in_count=found.hits_in,
            k_in=found.k_in,
            q=found.q,
            p=found.p,
        )

    @classmethod
    def concat(cls, parts: list[_Entries]) -> _Entries:
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return cls(empty, empty, np.empty(0, dtype=np.float32), empty, empty)
        names = [f.name for f in fields(cls) if getattr(parts[0], f.name) is not None]
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in names})

    def take(self, index: np.ndarray) -> _Entries:
        return _Entries(
            **{
                f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                for f in fields(self)
            }
        )

    def order(self) -> np.ndarray:
        """Permutation sorting by test, then value descending, then train index."""
        return np.lexsort((~_sort_keys(self.value, self.train), self.test))

    def counts(self, n_models: int, test_hits: np.ndarray) -> tuple[np.ndarray, ...]:
        """``(hits_in, k_in, hits_out, k_out)`` of every entry."""
        return self.in_count, self.k_in, test_hits[self.test] - self.in_count, n_models - self.k_in

    def standard_error(self, n_models: int, test_hits: np.ndarray) -> np.ndarray:
        hits_in, k_in, hits_out, k_out = self.counts(n_models, test_hits)
        return standard_error(hits_in / k_in, k_in, hits_out / k_out, k_out).astype(np.float32)


def _rank_within_test(test_sorted: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal test indices of a sorted array."""
    first = np.searchsorted(test_sorted, test_sorted, side="left")
    return np.arange(len(test_sorted)) - first


class _RunningTopK:
    """For every test example, the k best entries seen so far, merged chunk by chunk."""

    #: Candidates are buffered and merged (one sort) once they outnumber this many times
    #: the entries kept (sorting after every chunk took a third of the scan), or
    #: ``MAX_PENDING`` entries (~36 bytes each), whichever is fewer.
    MERGE_FACTOR = 8
    MAX_PENDING = 2**22

    def __init__(self, k: int) -> None:
        self.k = k
        self.kept = _Entries.concat([])
        self._pending: list[_Entries] = []
        self._n_pending = 0

    def add(self, candidates: _Entries) -> None:
        self._pending.append(candidates)
        self._n_pending += len(candidates.test)
        limit = min(self.MERGE_FACTOR * max(len(self.kept.test), self.k), self.MAX_PENDING)
        if self._n_pending > limit:
            self._merge()

    def _merge(self) -> None:
        merged = _Entries.concat([self.kept, *self._pending])
        merged = merged.take(merged.order())
        self.kept = merged.take(_rank_within_test(merged.test) < self.k)
        self._pending, self._n_pending = [], 0

    def result(self, n_test: int, n_models: int, test_hits: np.ndarray) -> TopK:
        self._merge()
        kept = self.kept  # sorted by test, then rank
        rank = _rank_within_test(kept.test)
        index = np.full((n_test, self.k), -1, dtype=np.int64)
        value = np.full((n_test, self.k), np.nan, dtype=np.float32)
        se = np.full((n_test, self.k), np.nan, dtype=np.float32)
        index[kept.test, rank] = kept.train
        value[kept.test, rank] = kept.value
        se[kept.test, rank] = kept.standard_error(n_models, test_hits)
        return TopK(train_pos=index, value=value, se=se)


def _pairs(entries: _Entries, n_models: int, test_hits: np.ndarray, confidence: float) -> Pairs:
    entries = entries.take(entries.order())
    counts = entries.counts(n_models, test_hits)
    low, high = difference_interval(*counts, confidence=confidence)
    return Pairs(
        train_pos=entries.train,
        test_pos=entries.test,
        infl=entries.value,
        se=entries.standard_error(n_models, test_hits),
        p=fisher_pvalues(*counts) if entries.p is None else entries.p,
        q=np.full(len(entries.train), np.nan) if entries.q is None else entries.q,
        low=low,
        high=high,
    )
