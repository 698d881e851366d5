"""Tests of the planted-pairs generator (tailscope.estimate.synthetic), and the issue's
acceptance test: BH with Fisher p-values over all n x t influence pairs controls the false
discovery proportion and finds the strong planted pairs; the plain threshold does not."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import expit
from scipy.stats import norm

from tailscope.errors import DataError
from tailscope.estimate import influence, memorization, memorization_counts
from tailscope.estimate.fdr import bh_reject
from tailscope.estimate.synthetic import planted_run

# --- the generator ---------------------------------------------------------------------------


def test_masks_are_fixed_size_subsets_and_the_planted_sets_are_distinct():
    run = planted_run(40, 50, 30, 10, n_memorized=8, random_state=0)
    assert run.masks.shape == run.correct_train.shape == (40, 50)
    assert run.correct_test.shape == (40, 30)
    assert run.masks.dtype == run.correct_test.dtype == bool
    assert (run.masks.sum(axis=1) == 35).all()
    assert len(set(run.pair_test.tolist())) == 10 and len(set(run.pair_train.tolist())) == 10
    assert not set(run.memorized.tolist()) & set(run.pair_train.tolist())
    assert (run.pair_influence > 0).all() and (run.memorization[run.memorized] > 0).all()
    others = np.setdiff1d(np.arange(50), run.memorized)
    assert (run.memorization[others] == 0).all()
    again = planted_run(40, 50, 30, 10, n_memorized=8, random_state=0)
    assert np.array_equal(again.correct_test, run.correct_test)


def exact_conditional(run, train, test, inside: bool) -> float:
    """P(correct on test | train in (or out of) the subset), by enumerating every subset of
    the (tiny) train set and integrating over the model quality numerically."""
    n = run.masks.shape[1]
    m = int(run.masks[0].sum())
    source = dict(zip(run.pair_test.tolist(), run.pair_train.tolist(), strict=True))
    effect = dict(zip(run.pair_test.tolist(), run.pair_effect.tolist(), strict=True))
    subsets = [set(s) for s in combinations(range(n), m) if (train in s) == inside]
    total = 0.0
    for subset in subsets:
        logit = run.test_logit[test] + (effect[test] if source.get(test) in subset else 0.0)
        total += quad(lambda q, a=logit: expit(a + q) * norm.pdf(q, 0, 0.7), -12, 12)[0]
    return total / len(subsets)


def test_true_influence_is_exact_for_planted_and_null_pairs():
    run = planted_run(4, 5, 3, 2, ratio=0.6, quality_sd=0.7, random_state=1)
    pairs = [(i, j) for i in range(5) for j in range(3)]
    truth = run.true_influence([i for i, _ in pairs], [j for _, j in pairs])
    for (i, j), value in zip(pairs, truth, strict=True):
        expected = exact_conditional(run, i, j, True) - exact_conditional(run, i, j, False)
        assert value == pytest.approx(expected, abs=1e-9), (i, j)
    planted = run.is_planted(run.pair_train, run.pair_test)
    assert planted.all() and (truth <= run.pair_influence.max()).all()
    # null pairs are never positive: 0, or -infl / (n - 1) on a planted test example
    assert (truth[~run.is_planted([i for i, _ in pairs], [j for _, j in pairs])] <= 0).all()


def test_estimates_from_many_models_agree_with_the_truth():
    run = planted_run(20000, 20, 10, 5, n_memorized=5, random_state=2)
    hits_in, k_in, hits_out, k_out = memorization_counts(run.masks, run.correct_train)
    mem = hits_in / k_in - hits_out / k_out
    se = np.sqrt(run.memorization_se**2 * (0.7 * 20000) / k_in)  # the SE at the actual k_in
    assert (np.abs(mem - run.memorization) < 4.5 * se).all()
    inside = run.masks[:, run.pair_train]
    right = run.correct_test[:, run.pair_test]
    infl = (right & inside).sum(0) / inside.sum(0) - (right & ~inside).sum(0) / (~inside).sum(0)
    assert (np.abs(infl - run.pair_influence) < 4.5 * run.pair_se).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_pairs": 40}, "n_pairs must be <= min"),
        ({"n_memorized": 60}, "n_memorized must be <= n_train"),
        ({"ratio": 0.001}, "ratio must leave"),
        ({"quality_sd": -1}, "quality_sd must be >= 0"),
        ({"planted_effect": (3, 1)}, "low <= high"),
        ({"test_logit": (0, -1)}, "sd >= 0"),
        ({"n_models": 1}, "n_models must be an integer >= 2"),
    ],
)
def test_bad_arguments_raise_data_error(kwargs, message):
    arguments = {"n_models": 10, "n_train": 50, "n_test": 30, "n_pairs": 5} | kwargs
    with pytest.raises(DataError, match=message):
        planted_run(**arguments)


# --- acceptance: FDR over every influence pair --------------------------------------------------


def influence_findings(run, method="bh", q=0.1):
    """What the public estimators report: Fisher-BH findings over all n x t pairs
    (``influence(fdr=q)``, streamed over chunks of train rows), the paper's plain
    infl >= 0.15 rule (``influence(threshold=0.15)``), and the memorization findings."""
    found = influence(run.masks, run.correct_test, fdr=q, method=method, chunk_size=512)
    plain = influence(run.masks, run.correct_test, threshold=0.15, chunk_size=512).pairs
    mem = memorization(run.masks, run.correct_train, method=method)
    return found, (plain.train_pos, plain.test_pos), np.flatnonzero(mem.q <= q)


def proportions(run, train, test):
    """(false discovery proportion, recall of the planted pairs with infl >= 7 SE)."""
    planted = run.is_planted(train, test)
    strong = run.pair_influence >= 7 * run.pair_se
    found = set(zip(train[planted].tolist(), test[planted].tolist(), strict=True))
    wanted = zip(run.pair_train[strong].tolist(), run.pair_test[strong].tolist(), strict=True)
    recall = np.mean([pair in found for pair in wanted])
    return (1.0 - planted.mean() if len(train) else 0.0), recall


def acceptance(seeds, method="bh"):
    fdp, recall, threshold_fdp, mem_fdp = [], [], [], []
    for seed in seeds:
        run = planted_run(256, 3000, 1500, 60, n_memorized=60, random_state=seed)
        found, threshold, mem = influence_findings(run, method)
        assert found.n_tests == 3000 * 1500
        assert (found.pairs.q <= 0.1).all()
        a, b = proportions(run, found.pairs.train_pos, found.pairs.test_pos)
        fdp.append(a)
        recall.append(b)
        threshold_fdp.append(proportions(run, *threshold)[0])
        mem_fdp.append(1.0 - np.isin(mem, run.memorized).mean() if len(mem) else 0.0)
    return np.array(fdp), np.array(recall), np.array(threshold_fdp), np.array(mem_fdp)


def test_planted_pairs_fisher_bh_controls_fdp_and_finds_the_strong_pairs():
    # K = 256, n = 3000, t = 1500 (4.5M tests), 60 planted pairs, 5 seeds.
    fdp, recall, threshold_fdp, mem_fdp = acceptance(range(5))
    assert fdp.mean() <= 0.15
    assert recall.mean() >= 0.8 and recall.min() >= 0.7
    assert threshold_fdp.mean() >= 0.9  # the plain infl >= 0.15 rule finds mostly noise
    assert mem_fdp.mean() <= 0.15


@pytest.mark.slow
def test_planted_pairs_over_twenty_seeds_bh_and_by_against_z_tests():
    fdp, recall, _, mem_fdp = acceptance(range(20))
    assert fdp.mean() <= 0.1 and recall.mean() >= 0.95 and mem_fdp.mean() <= 0.1
    by_fdp, by_recall, _, _ = acceptance(range(20), method="by")
    assert by_fdp.mean() <= fdp.mean() and by_recall.mean() >= 0.9
    # The plug-in z test, BH-adjusted the same way, does not control the FDR (p-hat 0 or 1
    # makes its standard error 0); that is why the p-values are exact.
    plug_in = []
    for seed in range(5):
        run = planted_run(256, 3000, 1500, 60, random_state=seed)
        masks, correct = run.masks, run.correct_test
        in_count = correct.T.astype(np.float32) @ masks.astype(np.float32)
        k_in, k_out = masks.sum(0), 256 - masks.sum(0)
        p_in, p_out = in_count / k_in, (correct.sum(0)[:, None] - in_count) / k_out
        se = np.sqrt(p_in * (1 - p_in) / k_in + p_out * (1 - p_out) / k_out)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(se > 0, norm.sf((p_in - p_out) / se), np.where(p_in > p_out, 0.0, 1.0))
        test, train = np.nonzero(bh_reject(p, 0.1))
        plug_in.append(proportions(run, train, test)[0])
    assert np.mean(plug_in) > 0.2
