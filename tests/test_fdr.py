"""Tests of FDR control (tailscope.estimate.fdr): dense BH/BY and the streamed procedures,
which must reject exactly what the dense procedure rejects, with the same q-values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import false_discovery_control

from tailscope.errors import DataError
from tailscope.estimate.fdr import (
    InfluenceFDR,
    StreamingBH,
    _BinTable,
    bh_qvalues,
    bh_reject,
)
from tailscope.estimate.significance import fisher_pvalues

# --- references ------------------------------------------------------------------------------


def reference_rejections(p: np.ndarray, q: float, method: str) -> np.ndarray:
    """Textbook BH/BY step-up: the largest k with p_(k) <= q k / (c N), and all up to it."""
    defined = np.flatnonzero(~np.isnan(p))
    n = len(defined)
    c = np.sum(1.0 / np.arange(1, n + 1)) if method == "by" else 1.0
    ordered = np.sort(p[defined])
    passing = np.flatnonzero(ordered <= q * np.arange(1, n + 1) / (c * n))
    if not len(passing):
        return np.zeros(p.shape, dtype=bool)
    return ~np.isnan(p) & (p <= ordered[passing[-1]])


def families(rng):
    """Named p-value families: mixtures, heavy ties, all null, all signal, N = 1."""
    mixed = np.concatenate([rng.random(3000), rng.random(200) * 1e-4, rng.random(50) * 1e-12])
    ties = np.round(np.concatenate([rng.random(2000), rng.random(300) * 0.01]), 3)
    ties[:100] = ties[100]  # a large block of equal p-values
    return {
        "mixed": rng.permutation(mixed),
        "ties": rng.permutation(ties),
        "all null": rng.random(4000),
        "all signal": rng.random(1000) * 1e-3,
        "one rejected": np.array([0.01]),
        "one kept": np.array([0.5]),
        "with nan": np.where(rng.random(3000) < 0.2, np.nan, rng.random(3000) ** 3),
    }


def stream(p: np.ndarray, q: float, method: str, max_kept: int, n_chunks: int, rng):
    """StreamingBH over p in chunks (each pass in a fresh random order, explicit ids)."""
    fdr = StreamingBH(q, method=method, max_kept=max_kept)
    pieces = np.array_split(np.arange(len(p)), n_chunks)
    for _ in fdr.passes():
        for piece in rng.permutation(len(pieces)):
            fdr.observe(p[pieces[piece]], pieces[piece])
    return fdr, fdr.result()


# --- dense -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bh", "by"])
def test_dense_qvalues_match_scipy_and_reject_as_the_step_up(method):
    rng = np.random.default_rng(0)
    for name, p in families(rng).items():
        q = bh_qvalues(p, method)
        defined = ~np.isnan(p)
        assert q.shape == p.shape and np.isnan(q[~defined]).all(), name
        expected = false_discovery_control(p[defined], method=method)
        np.testing.assert_allclose(q[defined], expected, rtol=1e-13, atol=0, err_msg=name)
        for level in (0.01, 0.1, 0.3):
            reject = bh_reject(p, level, method)
            assert np.array_equal(reject, reference_rejections(p, level, method)), (name, level)


def test_dense_qvalues_keep_the_shape_and_ignore_nan_in_n():
    p = np.array([[0.01, np.nan], [0.02, 0.04]])
    q = bh_qvalues(p)
    # N = 3 defined tests: q = min_{j >= i} 3 p_(j) / j
    np.testing.assert_allclose(q, [[0.03, np.nan], [0.03, 0.04]], rtol=1e-15)
    assert np.isnan(bh_qvalues(np.full(3, np.nan))).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bh_qvalues([0.1, 1.5]), "p must hold p-values in"),
        (lambda: bh_qvalues([0.1], method="holm"), "method must be one of"),
        (lambda: bh_reject([0.1], q=0), r"q must be a finite number in \(0, 1\)"),
        (lambda: bh_reject([0.1], q="x"), "q must be a finite number"),
    ],
)
def test_dense_bad_arguments_raise_data_error(call, message):
    with pytest.raises(DataError, match=message):
        call()


# --- streamed p-values -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bh", "by"])
@pytest.mark.parametrize("max_kept", [2**21, 100, 0])
def test_streaming_matches_dense_exactly(method, max_kept):
    rng = np.random.default_rng(1)
    for name, p in families(rng).items():
        for level in (0.05, 0.1):
            fdr, found = stream(p, level, method, max_kept, n_chunks=7, rng=rng)
            dense = bh_qvalues(p, method)
            expected = np.flatnonzero(dense <= level)
            assert np.array_equal(np.sort(found.index), expected), (name, level)
            assert np.array_equal(found.q, dense[found.index]), (name, level)
            assert np.array_equal(found.p, p[found.index])
            assert (np.diff(found.p) >= 0).all()
            assert found.n_tests == np.count_nonzero(~np.isnan(p))
            if len(found):
                assert found.cutoff == p[expected].max()
            else:
                assert np.isnan(found.cutoff)
            # one pass unless the rejections did not fit in what was kept
            assert fdr.passes_done == 1 or len(found) > max_kept // 2 or max_kept < 2**21


def test_streaming_default_ids_are_running_positions_in_every_pass():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.random(500), rng.random(40) * 1e-5])
    fdr = StreamingBH(0.1, max_kept=0)  # keep nothing: a second pass collects
    for _ in fdr.passes():
        for chunk in np.array_split(p, 5):
            fdr.observe(chunk)
    found = fdr.result()
    assert fdr.passes_done == 2
    assert np.array_equal(np.sort(found.index), np.flatnonzero(bh_reject(p, 0.1)))


def test_asking_twice_whether_another_pass_is_needed_gives_the_same_answer():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.random(500), rng.random(40) * 1e-5])
    fdr = StreamingBH(0.1, max_kept=0)
    fdr.observe(p)
    assert fdr.needs_another_pass and fdr.needs_another_pass
    fdr.observe(p)
    assert not fdr.needs_another_pass and not fdr.needs_another_pass
    assert len(fdr.result()) == np.count_nonzero(bh_reject(p))
    empty = InfluenceFDR(10, np.array([3, 4]))  # a family without a chunk: no tests
    assert not empty.needs_another_pass
    assert len(empty.result()) == 0 and empty.n_tests == 0


def test_streaming_refuses_a_pass_that_sees_other_data_and_use_after_result():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.random(500), rng.random(40) * 1e-5])
    fdr = StreamingBH(0.1, max_kept=0)
    fdr.observe(p)
    assert fdr.needs_another_pass
    fdr.observe(p[:-1])
    with pytest.raises(RuntimeError, match="every pass must see exactly"):
        fdr.result()
    done = StreamingBH(0.1)
    done.observe(p)
    done.result()
    with pytest.raises(RuntimeError, match="already called"):
        done.observe(p)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"q": 1.0}, r"q must be a finite number in \(0, 1\)"),
        ({"method": "bonferroni"}, "method must be one of"),
        ({"max_kept": -1}, "max_kept must be an integer >= 0"),
        ({"bins_per_decade": 0}, "bins_per_decade must be an integer >= 1"),
        ({"bins_per_decade": 32, "decades": 10}, "must be <= 254"),
        ({"decades": 30, "bins_per_decade": 8}, "use fewer decades"),
    ],
)
def test_streaming_bad_arguments_raise_data_error(kwargs, message):
    with pytest.raises(DataError, match=message):
        StreamingBH(**kwargs)


# --- influence counts --------------------------------------------------------------------------


def counts_run(n_models, n_train, n_test, seed, shift=None):
    """(in_count (t, n), k_in (n,), test_hits (t,)): every count valid for its margins.

    ``shift=None``: a masks-and-correctness run with 15% of the test examples copying one
    train example; a number: each count drawn at ``mean + sd (z + shift)`` (clipped to its
    support), so that most p-values are small (a signal-rich family)."""
    rng = np.random.default_rng(seed)
    if shift is None:
        masks = rng.random((n_models, n_train)) < 0.7
        correct = rng.random((n_models, n_test)) < rng.random(n_test)
        linked = int(0.15 * n_test)
        source = rng.integers(0, n_train, linked)
        correct[:, :linked] |= masks[:, source] & (rng.random((n_models, linked)) < 0.8)
        in_count = correct.T.astype(np.int32) @ masks.astype(np.int32)
        return in_count, masks.sum(0), correct.sum(0)
    hits = rng.integers(0, n_models + 1, n_test)
    k_in = rng.integers(1, n_models, n_train)
    h, k = hits[:, None], k_in[None, :]
    low, high = np.maximum(0, h + k - n_models), np.minimum(h, k)
    sd = np.sqrt(k * (n_models - k) * h * (n_models - h) / n_models**2 / (n_models - 1))
    z = rng.normal(size=(n_test, n_train)) + shift
    in_count = np.clip(np.round(k * h / n_models + sd * z), low, high).astype(np.int32)
    return in_count, k_in, hits


def influence_stream(in_count, k_in, hits, *, order=None, chunks=4, torch_input=False, **kw):
    n_models = kw.pop("n_models")
    fdr = InfluenceFDR(n_models, hits, **kw)
    columns = np.arange(in_count.shape[1]) if order is None else order
    pieces = np.array_split(columns, chunks)
    rng = np.random.default_rng(0)
    for _ in fdr.passes():
        for piece in rng.permutation(len(pieces)):
            cols = pieces[piece]
            block = in_count[:, cols]
            fdr.observe(torch.from_numpy(block) if torch_input else block, k_in[cols], cols)
    return fdr, fdr.result()


def dense_influence(fdr, in_count, k_in, method):
    """Every defined pair's p-value (the procedure's own) and dense q-values."""
    n_test = in_count.shape[0]
    test = np.broadcast_to(np.arange(n_test)[:, None], in_count.shape)
    k = np.broadcast_to(k_in[None, :], in_count.shape)
    defined = (k > 0) & (k < fdr.n_models)
    p = np.full(in_count.shape, np.nan)
    p[defined] = fdr.pvalues(in_count[defined], k[defined], test[defined])
    return p, bh_qvalues(p, method)


CASES = {
    # name: (K, n, t, shift, max_kept, passes with BH, passes with BY)
    "planted, one pass": (64, 300, 200, None, 2**21, 1, 1),
    "planted, collect": (64, 300, 200, None, 4, 2, 2),
    "signal-rich, refine": (100, 80, 60, 2.0, 2**21, 2, 1),
    "signal-rich, refine + collect": (100, 80, 60, 2.0, 30, 3, 2),
    "all null": (100, 120, 80, 0.0, 2**21, 1, 1),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["bh", "by"])
def test_influence_fdr_matches_dense_bh_exactly(case, method):
    n_models, n_train, n_test, shift, max_kept, *passes = CASES[case]
    in_count, k_in, hits = counts_run(n_models, n_train, n_test, seed=4, shift=shift)
    fdr, found = influence_stream(
        in_count, k_in, hits, n_models=n_models, q=0.1, method=method, max_kept=max_kept
    )
    p, q = dense_influence(fdr, in_count, k_in, method)
    expected = np.argwhere(q <= 0.1)
    assert set(zip(found.test.tolist(), found.train.tolist(), strict=True)) == set(
        map(tuple, expected.tolist())
    )
    assert np.array_equal(found.q, q[found.test, found.train])
    assert np.array_equal(found.p, p[found.test, found.train])
    assert found.n_tests == in_count.size
    assert np.array_equal(found.hits_in, in_count[found.test, found.train])
    assert np.array_equal(found.hits_out, hits[found.test] - found.hits_in)
    assert np.array_equal(found.k_in, k_in[found.train])
    assert np.array_equal(found.k_out, n_models - found.k_in)
    # the procedure's p-values are the exact Fisher p-values
    exact = fisher_pvalues(in_count, k_in[None, :], hits[:, None] - in_count, n_models - k_in)
    np.testing.assert_allclose(p, exact, rtol=1e-12, atol=0)
    # the paths that were to be exercised were: one pass, a refinement, a collection
    assert fdr.passes_done == passes[method == "by"]
    if case == "all null":
        assert len(found) == 0
    if "refine" in case:
        assert len(found) > 100


def test_influence_fdr_same_result_for_any_column_order_and_input_type():
    in_count, k_in, hits = counts_run(80, 400, 150, seed=5)
    sorted_order = np.argsort(k_in, kind="stable")  # chunks of one k_in: views
    results = [
        influence_stream(in_count, k_in, hits, n_models=80, order=order, torch_input=tensor)[1]
        for order, tensor in [(None, False), (sorted_order, False), (sorted_order[::-1], True)]
    ]
    keys = [np.lexsort((r.train, r.test)) for r in results]
    for result, key in zip(results[1:], keys[1:], strict=True):
        assert np.array_equal(result.train[key], results[0].train[keys[0]])
        assert np.array_equal(result.q[key], results[0].q[keys[0]])
    frame = results[0].to_frame()
    assert list(frame.columns) == [
        "train", "test", "infl", "p", "q", "hits_in", "k_in", "hits_out", "k_out",
    ]  # fmt: skip
    np.testing.assert_allclose(
        frame["infl"], frame["hits_in"] / frame["k_in"] - frame["hits_out"] / frame["k_out"]
    )


def test_influence_fdr_family_is_the_defined_pairs():
    in_count, k_in, hits = counts_run(64, 200, 100, seed=6)
    n_models = 64
    k_in = k_in.copy()
    k_in[:5] = 0  # never in a subset
    in_count[:, :5] = 0
    k_in[5:8] = n_models  # always in: counts equal the test's hits
    in_count[:, 5:8] = hits[:, None]
    fdr, found = influence_stream(in_count, k_in, hits, n_models=n_models, q=0.1)
    assert found.n_tests == (200 - 8) * 100
    assert not np.isin(found.train, np.arange(8)).any()
    p, q = dense_influence(fdr, in_count, k_in, "bh")
    assert np.count_nonzero(~np.isnan(p)) == found.n_tests
    assert len(found) == np.count_nonzero(q <= 0.1)
    # test examples always right (or always wrong) are tests with p-value 1
    assert (p[hits == n_models][:, 8:] == 1).all() or not (hits == n_models).any()


def test_bin_tables_rebuild_bit_for_bit_and_bins_follow_their_pvalues():
    fdr = InfluenceFDR(500, np.arange(501), q=0.1)
    for k in (1, 150, 350, 499):
        table = _BinTable(500, k, np.arange(501), fdr.grid)
        again = _BinTable(500, k, np.arange(501), fdr.grid)
        assert np.array_equal(table.pvalues, again.pvalues, equal_nan=True)
        assert np.array_equal(table.bins, again.bins) and np.array_equal(table.x_top, again.x_top)
        band = ~np.isnan(table.pvalues)
        bins = np.searchsorted(fdr.grid, table.pvalues[band], side="left")
        assert np.array_equal(table.bins[band], bins)
        assert (table.bins[:, 0] == fdr.n_bins).all()  # below the band: p > q
        assert (table.bins[:, -1] == 0).all()  # above it: p <= e_0
        assert (np.diff(table.bins.astype(int), axis=1) <= 0).all()
        # a few rows, in the full table's window, give the same bits
        rows = np.array([0, 7, 250, 251, 499, 500])
        part = _BinTable(500, k, rows, fdr.grid, table.window)
        assert np.array_equal(part.x_top, table.x_top[rows])
        width = part.width + 1
        assert np.array_equal(part.pvalues[:, :width], table.pvalues[rows, :width], equal_nan=True)


def test_influence_fdr_pvalues_check_their_pairs():
    fdr = InfluenceFDR(8, np.array([3, 5, 0]))
    with pytest.raises(DataError, match="one length"):
        fdr.pvalues([1, 2], [4], [0, 1])
    with pytest.raises(DataError, match="test must hold test rows"):
        fdr.pvalues([1], [4], [3])
    with pytest.raises(DataError, match="k_in must lie in"):
        fdr.pvalues([0], [8], [0])
    with pytest.raises(DataError, match="in_count must lie in"):
        fdr.pvalues([4], [4], [0])
    p = fdr.pvalues([3, 0, 0], [4, 4, 4], [0, 2, 0])
    np.testing.assert_allclose(p, fisher_pvalues([3, 0, 0], 4, [0, 0, 3], 4), rtol=1e-13)


def test_influence_fdr_checks_its_inputs():
    hits = np.array([3, 5, 0])
    with pytest.raises(DataError, match="n_models must be an integer >= 2"):
        InfluenceFDR(1, hits)
    with pytest.raises(DataError, match="test_hits must lie in"):
        InfluenceFDR(4, hits)
    with pytest.raises(DataError, match="test_hits must be a 1-D integer array"):
        InfluenceFDR(8, hits.astype(float))
    fdr = InfluenceFDR(8, hits)
    with pytest.raises(DataError, match=r"in_count must be \(t, c\)"):
        fdr.observe(np.zeros((2, 4), dtype=np.int32), np.full(4, 4), np.arange(4))
    with pytest.raises(DataError, match="in_count must hold integer counts"):
        fdr.observe(np.zeros((3, 4)), np.full(4, 4), np.arange(4))
    with pytest.raises(DataError, match="k_in must hold 4 integers"):
        fdr.observe(np.zeros((3, 4), dtype=np.int32), np.full(3, 4), np.arange(4))
    with pytest.raises(DataError, match="train_index must hold 4 integers"):
        fdr.observe(np.zeros((3, 4), dtype=np.int32), np.full(4, 4), np.arange(5))
    too_many = np.zeros((3, 4), dtype=np.int32)
    too_many[0, 0] = 4  # test 0 has 3 hits in all
    with pytest.raises(DataError, match="in_count exceeds"):
        fdr.observe(too_many, np.full(4, 4), np.arange(4))
