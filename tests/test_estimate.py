"""Tests of the memorization and influence estimators (tailscope.estimate)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import tailscope as ts
from tailscope.errors import DataError
from tailscope.estimate import (
    UndefinedEstimateWarning,
    bh_qvalues,
    difference_interval,
    fisher_pvalues,
    influence,
    memorization,
    standard_error,
)

# --- references ------------------------------------------------------------------------------


def brute_force(masks: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Difference of in/out means and its SE for every (train i, column j), by double loop.

    With ``correct = correct_train`` the diagonal is memorization; with ``correct_test`` the
    whole matrix is the influence. The SE uses the 0/1 sample variance ``var(ddof=0)``.
    """
    n, t = masks.shape[1], correct.shape[1]
    estimate = np.full((n, t), np.nan)
    se = np.full((n, t), np.nan)
    for i in range(n):
        inside = masks[:, i].astype(bool)
        if inside.all() or not inside.any():
            continue
        for j in range(t):
            a, b = correct[inside, j], correct[~inside, j]
            estimate[i, j] = a.mean() - b.mean()
            se[i, j] = np.sqrt(a.var() / len(a) + b.var() / len(b))
    return estimate, se


def ranked(values: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """The k candidates with the largest value, ties to the lower index (a plain sort)."""
    finite = candidates[~np.isnan(values[candidates])]
    order = sorted(finite, key=lambda i: (-values[i], i))
    return np.array(order[:k], dtype=np.int64)


def random_runs(rng, n_models, n_train, n_test, p=0.5):
    masks = rng.random((n_models, n_train)) < p
    correct_train = rng.random((n_models, n_train)) < 0.6
    correct_test = rng.random((n_models, n_test)) < 0.6
    return masks, correct_train, correct_test


def fixed_size_masks(rng, n_models, n_train, ratio):
    """Every model trains on exactly round(ratio * n) examples, as in the paper."""
    m = round(ratio * n_train)
    ranks = np.argsort(rng.random((n_models, n_train)), axis=1)
    return ranks < m


# --- memorization ----------------------------------------------------------------------------


def _mem(*args, **kwargs):
    """``(mem, se)`` of :func:`memorization`."""
    result = memorization(*args, **kwargs)
    return result.value, result.se


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_memorization_matches_brute_force(chunk_size):
    rng = np.random.default_rng(0)
    masks, correct_train, _ = random_runs(rng, 15, 31, 1)
    mem, se = _mem(masks, correct_train, chunk_size=chunk_size)
    estimate, expected_se = brute_force(masks, correct_train)
    assert mem.shape == se.shape == (31,)
    assert mem.dtype == se.dtype == np.float64
    np.testing.assert_allclose(mem, np.diag(estimate), rtol=0, atol=1e-12)
    np.testing.assert_allclose(se, np.diag(expected_se), rtol=0, atol=1e-12)


def test_memorization_takes_memmaps_and_0_1_numbers(tmp_path):
    rng = np.random.default_rng(1)
    masks, correct_train, _ = random_runs(rng, 9, 20, 1)
    np.save(tmp_path / "masks.npy", masks.astype(np.uint8))
    np.save(tmp_path / "correct.npy", correct_train.astype(np.float32))
    mem, se = _mem(
        np.load(tmp_path / "masks.npy", mmap_mode="r"),
        np.load(tmp_path / "correct.npy", mmap_mode="r"),
        chunk_size=6,
    )
    expected_mem, expected_se = _mem(masks, correct_train)
    np.testing.assert_array_equal(mem, expected_mem)
    np.testing.assert_array_equal(se, expected_se)


def test_standard_error_formula():
    se = standard_error([0.9, 0.5], [100, 4], [0.3, 0.5], [50, 4])
    expected = [np.sqrt(0.9 * 0.1 / 100 + 0.3 * 0.7 / 50), np.sqrt(2 * 0.25 / 4)]
    np.testing.assert_allclose(se, expected)
    assert np.isnan(standard_error(0.5, 0, 0.5, 10))
    assert np.isnan(standard_error(0.5, 10, 0.5, 0))
    assert np.ndim(standard_error(0.5, 10, 0.5, 10)) == 0


def test_memorization_planted_effects_within_standard_errors():
    """Simulated models whose correctness on example i depends only on whether i was in."""
    rng = np.random.default_rng(2)
    n_models, n_train = 1000, 60
    p_in = rng.choice([0.9, 0.95, 0.7, 0.5], size=n_train)
    p_out = rng.choice([0.3, 0.95, 0.2, 0.5], size=n_train)
    masks = fixed_size_masks(rng, n_models, n_train, 0.7)
    correct = rng.random((n_models, n_train)) < np.where(masks, p_in, p_out)
    mem, se = _mem(masks, correct)
    # With 60 independent estimates, P(any |z| > 5) is about 60 * 5.7e-7.
    assert np.all(np.abs(mem - (p_in - p_out)) <= 5 * se)
    assert np.all(se < 0.05)  # bounded as in DESIGN §1 (K=1000, m=0.7n)


def test_memorization_standard_error_matches_simulation():
    """The reported SE equals the spread of the estimate over repeated experiments.

    Each of R columns is an independent replicate of one experiment (K models, independent
    masks, p_in=0.9, p_out=0.3), so the sample variance of mem over columns estimates the
    true variance of the estimator. Tolerance: the sample variance of R near-normal values
    has relative standard error sqrt(2 / (R - 1)) (1% at R=20000), so allow 5 of those, plus
    the known downward bias of the plug-in variance p(1-p) by a factor (1 - 1/K_in), which is
    below 1 / min(K_in).
    """
    rng = np.random.default_rng(3)
    n_models, n_replicates, p_in, p_out = 400, 20_000, 0.9, 0.3
    masks = rng.random((n_models, n_replicates)) < 0.5
    correct = rng.random((n_models, n_replicates)) < np.where(masks, p_in, p_out)
    mem, se = _mem(masks, correct)
    empirical_variance = mem.var(ddof=1)
    reported_variance = np.mean(se**2)
    tolerance = 5 * np.sqrt(2 / (n_replicates - 1)) + 1 / masks.sum(axis=0).min()
    assert abs(empirical_variance / reported_variance - 1) < tolerance
    assert abs(mem.mean() - (p_in - p_out)) < 5 * np.sqrt(empirical_variance / n_replicates)


def test_memorization_nan_and_one_warning_for_examples_never_in_or_never_out():
    rng = np.random.default_rng(4)
    masks, correct_train, _ = random_runs(rng, 10, 12, 1)
    masks[:, 2] = True
    masks[:, 7] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mem, se = _mem(masks, correct_train, chunk_size=5)
    assert len(caught) == 1
    assert issubclass(caught[0].category, UndefinedEstimateWarning)
    assert issubclass(caught[0].category, RuntimeWarning)
    assert "2 of 12" in str(caught[0].message)
    assert np.isnan(mem[[2, 7]]).all() and np.isnan(se[[2, 7]]).all()
    assert np.isfinite(np.delete(mem, [2, 7])).all()


def test_memorization_no_warning_when_every_example_has_an_estimate():
    rng = np.random.default_rng(5)
    masks, correct_train, _ = random_runs(rng, 10, 12, 1)
    masks[0], masks[1] = True, False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        memorization(masks, correct_train)


@pytest.mark.parametrize(
    ("masks_shape", "correct_shape", "message"),
    [
        ((1, 5), (1, 5), "at least 2 models"),
        ((4, 5), (3, 5), "correct_train has 3 rows"),
        ((4, 5), (4, 6), "correct_train has shape"),
        ((5,), (4, 5), "masks must be 2-D"),
    ],
)
def test_memorization_rejects_bad_shapes(masks_shape, correct_shape, message):
    with pytest.raises(DataError, match=message):
        memorization(np.ones(masks_shape, bool), np.ones(correct_shape, bool))


def test_memorization_rejects_bad_values():
    masks = np.eye(4, dtype=np.int64)
    with pytest.raises(DataError, match="masks must hold only 0 and 1"):
        memorization(masks * 2, masks)
    with pytest.raises(DataError, match="correct_train contains NaN"):
        memorization(masks, np.where(masks, np.nan, 0.0))
    with pytest.raises(DataError, match="masks must hold booleans"):
        memorization(masks.astype(str), masks)
    with pytest.raises(DataError, match="chunk_size"):
        memorization(masks, masks, chunk_size=0)
    with pytest.raises(ValueError):  # DataError is a ValueError too
        memorization(masks[:1], masks[:1])


# --- influence: exactness --------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
def test_influence_matches_brute_force(tmp_path, chunk_size):
    rng = np.random.default_rng(10)
    masks, _, correct_test = random_runs(rng, 14, 23, 19)
    expected, expected_se = brute_force(masks, correct_test)
    k, threshold = 4, 0.2
    result = influence(
        masks,
        correct_test,
        top_k=k,
        threshold=threshold,
        dense_path=tmp_path / "infl.npy",
        chunk_size=chunk_size,
    )
    dense = np.load(tmp_path / "infl.npy")
    assert dense.shape == (23, 19) and dense.dtype == np.float32
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.dense, dense)
    np.testing.assert_array_equal(result.train_pos, np.arange(23))

    top = result.top_k
    assert top.train_pos.shape == top.value.shape == top.se.shape == (19, k)
    assert top.train_pos.dtype == np.int64 and top.value.dtype == top.se.dtype == np.float32
    for j in range(19):
        # Exactly the plain sort of this column's (float32) values, ties to the lower index.
        np.testing.assert_array_equal(top.train_pos[j], ranked(dense[:, j], np.arange(23), k))
        np.testing.assert_array_equal(top.value[j], dense[top.train_pos[j], j])
        np.testing.assert_allclose(top.se[j], expected_se[top.train_pos[j], j], atol=1e-6)

    pairs = result.pairs
    train, test = np.nonzero(dense >= threshold)
    assert len(pairs) == len(train) > 0
    assert set(zip(pairs.train_pos, pairs.test_pos, strict=True)) == set(
        zip(train, test, strict=True)
    )
    np.testing.assert_array_equal(pairs.infl, dense[pairs.train_pos, pairs.test_pos])
    np.testing.assert_allclose(pairs.se, expected_se[pairs.train_pos, pairs.test_pos], atol=1e-6)
    order = np.lexsort((pairs.train_pos, -pairs.infl, pairs.test_pos))
    np.testing.assert_array_equal(order, np.arange(len(pairs)))  # (test, -infl, train)
    frame = pairs.to_frame()
    assert list(frame.columns) == [
        "train_pos",
        "test_pos",
        "infl",
        "infl_se",
        "infl_low",
        "infl_high",
        "p",
        "q",
    ]
    assert len(frame) == len(pairs)
    # Each pair's exact one-sided p-value and interval come from its own counts; no q-value
    # without fdr (the paper's plain rule).
    counts = brute_force_counts(masks, correct_test)
    at = (pairs.train_pos, pairs.test_pos)
    np.testing.assert_allclose(pairs.p, fisher_pvalues(*(c[at] for c in counts)), rtol=1e-12)
    low, high = difference_interval(*(c[at] for c in counts))
    np.testing.assert_array_equal(pairs.low, low)
    np.testing.assert_array_equal(pairs.high, high)
    assert np.all((pairs.low <= pairs.infl) & (pairs.infl <= pairs.high))
    assert np.isnan(pairs.q).all()


def brute_force_counts(masks: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, ...]:
    """(hits_in, k_in, hits_out, k_out), each (n, t), by loops over the models."""
    m, c = masks.astype(np.int64), correct.astype(np.int64)
    hits_in = m.T @ c
    k_in = np.repeat(m.sum(axis=0)[:, None], c.shape[1], axis=1)
    hits_out = (1 - m).T @ c
    return hits_in, k_in, hits_out, len(m) - k_in


@pytest.mark.parametrize("method", ["bh", "by"])
def test_influence_findings_are_dense_bh_over_every_defined_pair(method):
    # Planted effects among many null pairs; one train example in every subset (undefined).
    rng = np.random.default_rng(3)
    k, n, t = 120, 40, 30
    masks = fixed_size_masks(rng, k, n, 0.7)
    masks[:, 0] = True
    logits = rng.normal(0.5, 1.0, size=(1, t)) + 4.0 * (masks[:, [5, 9, 17]] @ np.eye(3, t))
    correct = rng.random((k, t)) < 1 / (1 + np.exp(-logits))
    counts = brute_force_counts(masks, correct)
    p = fisher_pvalues(*counts)
    p[0] = np.nan  # not a test: in every subset
    q = bh_qvalues(p, method)
    with pytest.warns(UndefinedEstimateWarning, match="1 of 40"):
        found = influence(masks, correct, fdr=0.1, method=method, chunk_size=7)
    expected = np.argwhere(q <= 0.1)
    assert len(expected) >= 3
    assert found.n_tests == (n - 1) * t
    got = np.column_stack([found.pairs.train_pos, found.pairs.test_pos])
    assert {tuple(x) for x in got} == {tuple(x) for x in expected}
    at = (found.pairs.train_pos, found.pairs.test_pos)
    np.testing.assert_allclose(found.pairs.q, q[at], rtol=1e-10)
    np.testing.assert_allclose(found.pairs.p, p[at], rtol=1e-10)
    assert found.cutoff == pytest.approx(p[at].max())
    # With a threshold: the findings whose estimate also reaches it, the family unchanged.
    with pytest.warns(UndefinedEstimateWarning):
        at_least = influence(masks, correct, threshold=0.4, fdr=0.1, method=method)
    with np.errstate(invalid="ignore"):  # row 0: never out
        estimate = counts[0] / counts[1] - counts[2] / counts[3]
    keep = estimate[at] >= 0.4
    assert len(at_least.pairs) == keep.sum() and at_least.n_tests == found.n_tests
    np.testing.assert_allclose(
        at_least.pairs.q,
        np.sort(found.pairs.q[keep])
        if False
        else q[at_least.pairs.train_pos, at_least.pairs.test_pos],
        rtol=1e-10,
    )


def test_high_influence_pairs_select_among_findings_never_among_preselected_rows():
    rng = np.random.default_rng(4)
    k, n, t = 160, 50, 24
    masks = fixed_size_masks(rng, k, n, 0.7)
    # Train examples 3 and 8 are memorized and help test examples 2 and 5 (same labels).
    correct_train = rng.random((k, n)) < 0.9
    correct_train[:, [3, 8]] = masks[:, [3, 8]] & (rng.random((k, 2)) < 0.95)
    correct_test = rng.random((k, t)) < 0.6
    correct_test[:, [2, 5]] = masks[:, [3, 8]] & (rng.random((k, 2)) < 0.95)
    y_train, y_test = np.arange(n) % 3, np.arange(t) % 3
    y_test[[2, 5]] = y_train[[3, 8]]
    est = ts.Estimates(masks, correct_train, correct_test, y_train, y_test)
    pairs = est.high_influence_pairs(infl=0.15, mem=0.25, fdr=0.1)
    assert {(3, 2), (8, 5)} <= set(zip(pairs.train_pos, pairs.test_pos, strict=True))
    everything = est.influence(fdr=0.1)  # the family: every pair, whatever its row's mem
    assert everything.n_tests == n * t
    found = everything.pairs
    q = {
        (i, j): value for i, j, value in zip(found.train_pos, found.test_pos, found.q, strict=True)
    }
    for row in pairs.itertuples():
        assert row.q == q[(row.train_pos, row.test_pos)] <= 0.1
        assert row.infl >= 0.15 and row.mem >= 0.25 and row.mem_q <= 0.1
        assert est.y_train[row.train_pos] == est.y_test[row.test_pos]
    plain = est.high_influence_pairs(infl=0.15, mem=0.25, fdr=None)
    assert len(plain) >= len(pairs) and np.isnan(plain["q"]).all()
    with pytest.raises(ValueError, match="fdr=None"):
        est.high_influence_pairs(fdr=0.1, mirrored=True)


def test_influence_train_index_restricts_rows_and_keeps_global_indices(tmp_path):
    rng = np.random.default_rng(11)
    masks, _, correct_test = random_runs(rng, 12, 40, 9)
    full = influence(masks, correct_test, threshold=0.1, dense_path=tmp_path / "all.npy")
    rows = np.array([33, 4, 17, 8, 25, 0, 39])
    part = influence(
        masks,
        correct_test,
        top_k=3,
        threshold=0.1,
        train_pos=rows,
        dense_path=tmp_path / "part.npy",
        chunk_size=3,
    )
    np.testing.assert_array_equal(part.train_pos, rows)
    np.testing.assert_array_equal(part.dense, full.dense[rows])
    for j in range(9):
        np.testing.assert_array_equal(part.top_k.train_pos[j], ranked(full.dense[:, j], rows, 3))
    keep = np.isin(full.pairs.train_pos, rows)
    np.testing.assert_array_equal(part.pairs.train_pos, full.pairs.train_pos[keep])
    np.testing.assert_array_equal(part.pairs.test_pos, full.pairs.test_pos[keep])
    np.testing.assert_array_equal(part.pairs.se, full.pairs.se[keep])


def test_influence_is_identical_across_chunk_sizes_and_count_paths(monkeypatch):
    """int8 (torch._int_mm) and float32 counts, any chunking, any merging of the running
    top-k: bit-identical results."""
    rng = np.random.default_rng(12)
    masks, _, correct_test = random_runs(rng, 30, 101, 20, p=0.7)

    def run(chunk_size):
        return influence(masks, correct_test, top_k=5, threshold=0.0, chunk_size=chunk_size)

    reference = run(2048)
    results = [run(1), run(16), run(17), run(33)]
    running_top_k = sys.modules["tailscope.estimate.influence"]._RunningTopK
    monkeypatch.setattr(running_top_k, "MAX_PENDING", 1)  # merge after every chunk
    results.append(run(9))
    monkeypatch.setattr(running_top_k, "MAX_PENDING", 10**12)
    monkeypatch.setattr(running_top_k, "MERGE_FACTOR", 10**12)  # merge once, at the end
    results.append(run(9))
    monkeypatch.delattr(torch, "_int_mm")  # forces the float32 path
    results.append(run(7))
    for result in results:
        for name in ("train_pos", "value", "se"):
            np.testing.assert_array_equal(
                getattr(result.top_k, name), getattr(reference.top_k, name)
            )
        for name in ("train_pos", "test_pos", "infl", "se"):
            np.testing.assert_array_equal(
                getattr(result.pairs, name), getattr(reference.pairs, name)
            )


def test_influence_ties_go_to_the_lower_train_index():
    rng = np.random.default_rng(13)
    masks, _, correct_test = random_runs(rng, 20, 8, 6)
    masks = np.repeat(masks, 3, axis=1)  # rows 3i, 3i+1, 3i+2 are identical
    result = influence(masks, correct_test, top_k=3, chunk_size=4)
    assert np.all(result.top_k.train_pos[:, 0] % 3 == 0)
    np.testing.assert_array_equal(
        result.top_k.train_pos[:, 1:], result.top_k.train_pos[:, :1] + [1, 2]
    )


@pytest.mark.parametrize("max_tie_factor", [0, 10**9])
def test_influence_top_k_exact_under_heavy_ties(monkeypatch, tmp_path, max_tie_factor):
    """Few models make few distinct values; factor 0 forces the exact full ranking of chunks."""
    monkeypatch.setattr(
        sys.modules["tailscope.estimate.influence"], "_MAX_TIE_FACTOR", max_tie_factor
    )
    rng = np.random.default_rng(14)
    masks, _, correct_test = random_runs(rng, 4, 300, 6)
    with pytest.warns(UndefinedEstimateWarning):  # with K=4 some rows are always in or out
        result = influence(
            masks, correct_test, top_k=5, dense_path=tmp_path / "d.npy", chunk_size=64
        )
    for j in range(6):
        expected = ranked(result.dense[:, j], np.arange(300), 5)
        np.testing.assert_array_equal(result.top_k.train_pos[j], expected)


def test_influence_nan_rows_are_left_out_with_one_warning(tmp_path):
    rng = np.random.default_rng(15)
    masks, _, correct_test = random_runs(rng, 10, 9, 4)
    masks[:, 1] = True
    masks[:, 5] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = influence(
            masks,
            correct_test,
            top_k=9,
            threshold=-1.0,
            dense_path=tmp_path / "d.npy",
            chunk_size=2,
        )
    assert len(caught) == 1
    assert issubclass(caught[0].category, UndefinedEstimateWarning)
    assert "2 of 9" in str(caught[0].message)
    assert np.isnan(result.dense[[1, 5]]).all()
    assert np.isfinite(np.delete(result.dense, [1, 5], axis=0)).all()
    # 7 rows have an estimate: top-9 is padded with -1 / NaN.
    assert np.all(result.top_k.train_pos[:, 7:] == -1)
    assert np.isnan(result.top_k.value[:, 7:]).all() and np.isnan(result.top_k.se[:, 7:]).all()
    assert not np.isin(result.top_k.train_pos[:, :7], [1, 5, -1]).any()
    assert len(result.pairs) == 7 * 4 and not np.isin(result.pairs.train_pos, [1, 5]).any()


def test_influence_empty_train_index_gives_empty_results():
    rng = np.random.default_rng(16)
    masks, _, correct_test = random_runs(rng, 10, 9, 4)
    result = influence(masks, correct_test, top_k=2, threshold=0.0, train_pos=[])
    assert len(result.pairs) == 0 and len(result.pairs.to_frame()) == 0
    assert np.all(result.top_k.train_pos == -1)


def test_influence_progress_bar_and_device_argument(capsys):
    rng = np.random.default_rng(17)
    masks, _, correct_test = random_runs(rng, 10, 9, 4)
    quiet = influence(masks, correct_test, top_k=2, chunk_size=4)
    shown = influence(masks, correct_test, top_k=2, chunk_size=4, device="cpu", progress=True)
    assert "influence" in capsys.readouterr().err
    np.testing.assert_array_equal(quiet.top_k.train_pos, shown.top_k.train_pos)
    assert quiet.pairs is None and quiet.dense is None


# --- influence: statistics -------------------------------------------------------------------


def test_influence_planted_pairs_within_standard_errors():
    """Test example j is right more often when train example planted[j] is in the subset."""
    rng = np.random.default_rng(20)
    n_models, n_train, n_test, ratio = 1000, 40, 12, 0.7
    masks = fixed_size_masks(rng, n_models, n_train, ratio)
    planted = {0: 3, 1: 3, 5: 17, 8: 30}  # test j -> train i
    p_in, p_out, base = 0.85, 0.45, 0.7
    p_correct = np.full((n_models, n_test), base)
    truth = np.zeros((n_train, n_test))
    for j, i in planted.items():
        p_correct[:, j] = np.where(masks[:, i], p_in, p_out)
        # With fixed-size subsets, i' != i is in slightly less often when i is in:
        # P(i in | i' in) - P(i in | i' out) = -1 / (n - 1).
        truth[:, j] = -(p_in - p_out) / (n_train - 1)
        truth[i, j] = p_in - p_out
    correct_test = rng.random((n_models, n_test)) < p_correct

    result = influence(masks, correct_test, top_k=1, threshold=0.2, dense_path=None)
    full = influence(masks, correct_test, threshold=-1.0)
    estimate = np.full((n_train, n_test), np.nan)
    se = np.full((n_train, n_test), np.nan)
    estimate[full.pairs.train_pos, full.pairs.test_pos] = full.pairs.infl
    se[full.pairs.train_pos, full.pairs.test_pos] = full.pairs.se
    # 480 estimates: P(any |z| > 5) is about 480 * 5.7e-7 under the truth.
    assert np.all(np.abs(estimate - truth) <= 5 * se)
    for j, i in planted.items():
        assert result.top_k.train_pos[j, 0] == i
    found = set(zip(result.pairs.train_pos.tolist(), result.pairs.test_pos.tolist(), strict=True))
    assert found == {(i, j) for j, i in planted.items()}  # noise SE ~0.03, 0.2 is > 6 SE


def test_influence_standard_error_matches_simulation():
    """As for memorization: R test columns are independent replicates given the masks."""
    rng = np.random.default_rng(21)
    n_models, n_replicates, p_in, p_out = 400, 20_000, 0.8, 0.6
    masks = rng.random((n_models, 2)) < 0.5
    in_subset = masks[:, :1]
    correct_test = rng.random((n_models, n_replicates)) < np.where(in_subset, p_in, p_out)
    pairs = influence(masks, correct_test, threshold=-1.0, train_pos=[0]).pairs
    assert len(pairs) == n_replicates
    empirical_variance = pairs.infl.astype(np.float64).var(ddof=1)
    reported_variance = np.mean(pairs.se.astype(np.float64) ** 2)
    # Same tolerance argument as test_memorization_standard_error_matches_simulation.
    k_in = int(in_subset.sum())
    tolerance = 5 * np.sqrt(2 / (n_replicates - 1)) + 1 / min(k_in, n_models - k_in)
    assert abs(empirical_variance / reported_variance - 1) < tolerance
    true_variance = p_in * (1 - p_in) / k_in + p_out * (1 - p_out) / (n_models - k_in)
    assert abs(empirical_variance / true_variance - 1) < 5 * np.sqrt(2 / (n_replicates - 1))


# --- influence: input checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_k": 0}, "top_k must be in"),
        ({"top_k": 11}, "top_k must be in"),
        ({"top_k": 1.5}, "top_k must be an integer"),
        ({"top_k": True}, "top_k must be an integer"),
        ({"threshold": float("nan")}, "threshold must be finite"),
        ({"threshold": "high"}, "threshold must be a number"),
        ({"top_k": 1, "chunk_size": 0}, "chunk_size must be >= 1"),
        ({"top_k": 1, "chunk_size": 2.0}, "chunk_size must be a positive integer"),
        ({"top_k": 1, "train_pos": [0, 10]}, "train_pos must lie in"),
        ({"top_k": 1, "train_pos": [1, 1]}, "train_pos has duplicate"),
        ({"top_k": 1, "train_pos": [[1]]}, "train_pos must be 1-D"),
        ({"top_k": 1, "train_pos": [0.5]}, "train_pos must hold integers"),
        ({}, "at least one of top_k, threshold, fdr or dense_path"),
    ],
)
def test_influence_rejects_bad_arguments(kwargs, message):
    rng = np.random.default_rng(30)
    masks, _, correct_test = random_runs(rng, 6, 10, 3)
    with pytest.raises(DataError, match=message):
        influence(masks, correct_test, **kwargs)


def test_influence_rejects_bad_arrays():
    rng = np.random.default_rng(31)
    masks, _, correct_test = random_runs(rng, 6, 10, 3)
    with pytest.raises(DataError, match="correct_test has 5 rows"):
        influence(masks, correct_test[:5], top_k=1)
    with pytest.raises(DataError, match="at least 2 models"):
        influence(masks[:1], correct_test[:1], top_k=1)
    with pytest.raises(DataError, match="correct_test must be 2-D"):
        influence(masks, correct_test[:, 0], top_k=1)
    with pytest.raises(DataError, match="masks must hold only 0 and 1"):
        influence(masks * 3, correct_test, top_k=1)
    bad = correct_test.astype(np.float64)
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="correct_test contains NaN"):
        influence(masks, bad, top_k=1)
    # 0/1 numbers are as good as booleans
    as_numbers = influence(masks.astype(np.float32), correct_test.astype(np.int64), top_k=2)
    as_bools = influence(masks, correct_test, top_k=2)
    np.testing.assert_array_equal(as_numbers.top_k.train_pos, as_bools.top_k.train_pos)


# --- influence: memory -----------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource
    import numpy as np
    import torch
    from tailscope.estimate import influence

    torch.set_num_threads(1)  # memory, not speed, is measured: keep it quick on a busy machine
    rng = np.random.default_rng(0)
    n_models, n_train, n_test = 200, 20_000, 5_000
    masks = rng.random((n_models, n_train), dtype=np.float32) < 0.7
    correct = rng.random((n_models, n_test), dtype=np.float32) < 0.8
    influence(masks[:, :600], correct, top_k=5, chunk_size=512)  # load kernels, warm pools
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = influence(masks, correct, top_k=5, threshold=0.3, chunk_size=512)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.top_k.train_pos.shape == (n_test, 5)
    print((after - before) * 1024)
    """
)


def test_influence_memory_does_not_grow_with_n_times_t():
    """Peak RSS growth is far below one (n, t) float32 matrix (400 MB here).

    Run in a fresh process, so the peak is not set by earlier tests. The chunk buffers are
    about 512 * 5000 * 14 bytes = 36 MB; allow a quarter of n * t * 4 bytes.
    """
    completed = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    growth = int(completed.stdout.split()[-1])
    assert growth < 20_000 * 5_000 * 4 / 4, f"peak RSS grew by {growth / 2**20:.0f} MiB"


def test_influence_reads_read_only_memmaps_quietly_and_prints_briefly(tmp_path):
    rng = np.random.default_rng(21)
    masks, _, correct_test = random_runs(rng, 30, 50, 20)
    np.save(tmp_path / "masks.npy", masks)
    read_only = np.load(tmp_path / "masks.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "non-writable NumPy array" warning
        result = influence(read_only, correct_test, top_k=3, threshold=0.5)
    expected = influence(masks, correct_test, top_k=3, threshold=0.5)
    np.testing.assert_array_equal(result.top_k.train_pos, expected.top_k.train_pos)
    assert (
        repr(result)
        == f"InfluenceResult(train_pos=(50,), top_k=(20, 3), pairs={len(result.pairs)})"
    )
