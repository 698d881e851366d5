"""The paper's analyses, each checked against a known answer.

Planted structure: scikit-learn's digits with (a) one mislabeled train example and (b) test
images copied into the train set with both copies relabelled to another class, so a model
classifies the test copy "correctly" only if it trained on (and memorized) the train copy.
The analyses must find exactly these: high memorization, high-influence pairs, an accuracy
drop on the influenced test examples when the copies are removed.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tailscope as ts
from tailscope.errors import DataError, DatasetNotAvailableError
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.experiments import (
    InfluencerRemoval,
    MarginalUtility,
    agreement,
    compare_runs,
    extremes,
    interval,
    jaccard,
    load_released_pairs,
    marginal_utility,
    memorization_agreement,
    memorization_distribution,
    mirror_pair_count,
    pair_summary,
    released_test_size,
    removal_masks,
    remove_influencers,
    split_half,
)

# The paper's released files, beside the repository (../shared/reference/README.md).
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
MISLABELED = 5
DUPLICATES = [(7, 3), (40, 30), (80, 60), (120, 90)]  # (train position, test position)


def _mlp(shape, n_classes):
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(int(np.prod(shape)), 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, n_classes),
    )


#: Enough epochs on 210 examples that a model fits every example it trained on.
RECIPE = ts.Recipe(name="planted-mlp", build=_mlp, epochs=20, batch_size=32, lr=0.1, momentum=0.9)


@pytest.fixture(scope="session")
def planted(digits):
    """digits 300/100 with one mislabeled train example and relabelled train/test copies."""
    xtr, ytr = digits.x_train.copy(), digits.y_train.copy()
    xte, yte = digits.x_test.copy(), digits.y_test.copy()
    ytr[MISLABELED] = (ytr[MISLABELED] + 1) % 10
    for i, j in DUPLICATES:
        relabelled = (yte[j] + 5) % 10
        xtr[i], ytr[i], yte[j] = xte[j], relabelled, relabelled
    return ts.datasets.from_arrays(xtr, ytr, xte, yte, name="planted-digits")


@pytest.fixture(scope="session")
def planted_run(planted, tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("planted") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        run = ts.Run.create(path, planted, RECIPE, n_models=64, seed=0, models_per_step=16)
        return run.train(progress=False)


@pytest.fixture(scope="session")
def planted_estimates(planted_run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        return planted_run.estimate()


# ---- planted structure surfaces ----------------------------------------------------------------
def test_planted_examples_are_the_most_memorized(planted_estimates):
    est = planted_estimates
    mem, se = est.memorization, est.memorization_se
    planted = [MISLABELED] + [i for i, _ in DUPLICATES]
    # Each planted example is fit when trained on and misclassified otherwise: mem near 1.
    assert np.all(mem[planted] - 4 * se[planted] > 0.5)
    most, _ = extremes(mem, len(planted) + 5)
    assert set(planted) <= set(most.tolist())
    dist = memorization_distribution(mem, se, est.y_train)
    assert dist.above_dict()["0.75"] * dist.n_defined >= len(planted)


def test_planted_pairs_are_high_influence_pairs(planted_estimates):
    pairs = planted_estimates.high_influence_pairs(infl=0.15, mem=0.25)
    found = set(zip(pairs["train_index"], pairs["test_index"], strict=True))
    assert set(DUPLICATES) <= found
    planted = pairs[
        [(t, s) in set(DUPLICATES) for t, s in zip(pairs.train_pos, pairs.test_pos, strict=True)]
    ]
    assert np.all(planted["infl"] - 4 * planted["infl_se"] > 0.5)
    # The mislabeled example has no test copy, so no pair may come from its label flip alone
    # with an influence as strong as the planted copies'.
    strongest = pairs.nlargest(len(DUPLICATES), "infl")
    assert set(zip(strongest.train_pos, strongest.test_pos, strict=True)) == set(DUPLICATES)
    summary = pair_summary(pairs["train_index"], pairs["test_index"], n_test=100)
    assert summary["pairs"] == len(pairs) >= len(DUPLICATES)


# ---- memorization distribution -----------------------------------------------------------------
def test_distribution_known_answer():
    mem = np.array([np.nan, -0.1, 0.0, 0.2, 0.25, 0.5, 0.74, 0.75, 1.0, 1.2])
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    dist = memorization_distribution(mem, np.full(10, 0.1), labels, bins=4, n_classes=3)
    assert dist.n_defined == 9 and dist.n_undefined == 1
    # bins [0, .25) [.25, .5) [.5, .75) [.75, 1]; -0.1 clips into the first, 1.2 into the last
    np.testing.assert_array_equal(dist.fraction * 9, [3, 1, 2, 3])
    np.testing.assert_array_equal(dist.class_fraction[0] * 4, [3, 1, 0, 0])
    np.testing.assert_array_equal(dist.class_fraction[2], [0, 0, 0, 0])  # an empty class
    np.testing.assert_allclose(dist.above, [6 / 9, 5 / 9, 3 / 9])
    np.testing.assert_allclose(dist.class_above[:2], [[1 / 4, 0, 0], [1, 1, 3 / 5]])
    assert np.isnan(dist.class_above[2]).all()
    assert dist.class_count.tolist() == [4, 5, 0]
    assert dist.mean == pytest.approx(np.nanmean(mem))
    assert dist.mean_se == pytest.approx(0.1)
    most, least = extremes(mem, 3)
    assert most.tolist() == [9, 8, 7] and least.tolist() == [1, 2, 3]


def test_distribution_validates_its_arguments():
    with pytest.raises(DataError, match="mem must be 1-D"):
        memorization_distribution(np.zeros((2, 2)))
    with pytest.raises(DataError, match="labels must be 3 integers"):
        memorization_distribution(np.zeros(3), labels=[0, 1])
    with pytest.raises(DataError, match="n_classes=2"):
        memorization_distribution(np.zeros(3), labels=[0, 1, 2], n_classes=2)
    with pytest.raises(DataError, match="bins must be"):
        memorization_distribution(np.zeros(3), bins=0)
    with pytest.raises(DataError, match="k must be"):
        extremes(np.zeros(3), -1)


# ---- pair summary and released pairs -------------------------------------------------------
def test_pair_summary_known_answer():
    train = [1, 2, 3, 4, 4, 4]
    test = [10, 10, 10, 11, 12, 12]  # (4, 12) twice: counted once
    row = pair_summary(train, test, n_test=200)
    assert row == {
        "pairs": 5,
        "unique_test": 3,
        "unique_test_pct": 1.5,
        "single_influencer_tests": 2,
        "unique_train": 4,
        "max_influencers_per_test": 3,
    }
    assert pair_summary([], [])["pairs"] == 0
    with pytest.raises(DataError, match="train has 2 entries but test has 1"):
        pair_summary([1, 2], [3])


def test_mirror_pairs_count_the_noise_pairs():
    # Correctness independent of the masks: every "pair" is noise, and the estimates are
    # symmetric around 0, so the mirror count matches the selected count in expectation.
    rng = np.random.default_rng(0)
    masks = rng.random((40, 300)) < 0.7
    est = ts.Estimates(
        masks,
        rng.random((40, 300)) < 0.8,
        rng.random((40, 60)) < 0.8,
        y_train=np.zeros(300, dtype=int),
        y_test=np.zeros(60, dtype=int),
    )
    selected = est.high_influence_pairs(infl=0.15, mem=-1, fdr=None)
    mirror = mirror_pair_count(est, infl=0.15, mem=-1)
    # Every pair is noise: the plain rule selects hundreds, the findings at FDR 0.1 none.
    assert len(est.high_influence_pairs(infl=0.15, mem=-1, fdr=0.1)) == 0
    flipped = ts.estimate.influence(~masks, est.correct_test, threshold=0.15).pairs
    assert len(flipped) == mirror
    # Pairs of one train example share its mask, so compare per-row count differences,
    # which are close to independent across rows.
    per_row = np.bincount(selected["train_pos"], minlength=300) - np.bincount(
        flipped.train_pos, minlength=300
    )
    se = np.sqrt(300) * per_row.std(ddof=1)
    assert len(selected) > 100 and abs(len(selected) - mirror) < 5 * se
    # A different label on every test example leaves no same-label pair either way.
    est.y_test = np.ones(60, dtype=int)
    assert mirror_pair_count(est, infl=0.15, mem=-1) == 0
    assert mirror_pair_count(est, infl=0.15, mem=-1, same_label=False) == mirror
    assert mirror_pair_count(est, infl=0.15, mem=2.0) == 0


def test_planted_pairs_stand_above_the_noise_floor(planted_estimates):
    pairs = planted_estimates.high_influence_pairs(fdr=None)
    mirror = mirror_pair_count(planted_estimates)
    strong = mirror_pair_count(planted_estimates, infl=0.9)
    assert strong == 0 and (pairs["infl"] >= 0.9).sum() >= len(DUPLICATES)
    assert mirror < len(pairs)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the paper's released files are not here")
@pytest.mark.parametrize(
    ("name", "paper"),
    [
        # Feldman & Zhang 2020, Table 1 (and ../shared/reference/README.md)
        ("cifar100_pairs.npz", (1015, 888, 8.88, 774, 964, 3)),
        ("imagenet_pairs.npz", (1641, 1462, 2.92, 1298, 1605, 4)),
    ],
)
def test_released_pairs_reproduce_the_papers_summary(name, paper):
    path = REFERENCE / name
    pairs = load_released_pairs(path)
    assert list(pairs.columns) == ["train_index", "test_index", "infl", "mem"]
    assert (pairs["infl"] >= 0.15).all() and (pairs["mem"] >= 0.25).all()
    row = pair_summary(pairs["train_index"], pairs["test_index"], released_test_size(path))
    assert row["pairs"] == paper[0]
    assert row["unique_test"] == paper[1]
    assert row["unique_test_pct"] == pytest.approx(paper[2], abs=0.005)
    assert row["single_influencer_tests"] == paper[3]
    assert row["unique_train"] == paper[4]
    assert row["max_influencers_per_test"] == paper[5]


def test_released_pair_file_format(tmp_path):
    good = tmp_path / "cifar100_mine.npz"
    np.savez(good, tr_idx=[5, 6], tt_idx=[1, 1], infl=[0.2, 0.9], mem=[0.3, 0.8])
    pairs = load_released_pairs(good)
    assert pairs["train_index"].tolist() == [6, 5]  # sorted by decreasing influence
    assert released_test_size(good) == 10_000
    assert released_test_size(tmp_path / "other.npz") is None
    bad = tmp_path / "bad.npz"
    np.savez(bad, tr_idx=[1], tt_idx=[1], infl=[0.2])
    with pytest.raises(DataError, match="missing key.*mem"):
        load_released_pairs(bad)
    np.savez(bad, tr_idx=[1, 2], tt_idx=[1], infl=[0.2], mem=[0.5])
    with pytest.raises(DataError, match="equal length"):
        load_released_pairs(bad)
    np.savez(bad, tr_idx=[-1], tt_idx=[1], infl=[0.2], mem=[0.5])
    with pytest.raises(DataError, match="tr_idx must hold non-negative"):
        load_released_pairs(bad)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not an .npz"):
        load_released_pairs(tmp_path / "text.npz")
    with pytest.raises(DatasetNotAvailableError, match="does not exist"):
        load_released_pairs(tmp_path / "missing.npz")


# ---- retraining experiments ------------------------------------------------------------------
def test_removal_masks():
    targeted, random = removal_masks(50, [3, 7, 9], n_repeats=4, random_state=0)
    assert targeted.shape == random.shape == (4, 50)
    assert (~targeted).sum(axis=1).tolist() == [3] * 4
    assert not targeted[:, [3, 7, 9]].any() and targeted.sum() == 4 * 47
    assert (random.sum(axis=1) == 47).all()
    assert len({tuple(np.flatnonzero(~row)) for row in random}) > 1  # rows drawn independently
    with pytest.raises(DataError, match="none would be left"):
        removal_masks(3, [0, 1, 2], 1, 0)
    with pytest.raises(DataError, match=r"remove must lie in \[0, 3\)"):
        removal_masks(3, [5], 1, 0)


def test_interval():
    ci = interval([0.9, 0.8, 0.7])
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t_{0.975, 2} * sd / sqrt(R)
    assert ci["mean"] == pytest.approx(0.8)
    assert ci["high"] - ci["mean"] == pytest.approx(half)
    assert np.isnan(interval([0.5])["low"])


def _planted_run(planted, planted_run):
    torch.set_num_threads(1)
    return ts.Run.open(planted_run.path, data=planted, model=RECIPE)


def test_marginal_utility_removing_the_memorized_copies_costs_their_test_twins(
    planted, planted_run
):
    run = _planted_run(planted, planted_run)
    mem = np.zeros(planted.n_train)
    mem[[i for i, _ in DUPLICATES]] = 1.0
    mem[-1] = np.nan  # never removed
    result = marginal_utility(run, [0.5, 1.5], mem=mem, n_repeats=3)
    assert result.n_removed.tolist() == [len(DUPLICATES), 0]
    row = result.frame().iloc[0]
    # Without its train copy each relabelled test twin is misclassified; random removal of
    # as many examples rarely hits a copy, so the paired gap is positive.
    assert row["gap_low"] > 0
    # Removing nothing reuses the full-set models: identical accuracies.
    np.testing.assert_array_equal(result.targeted[1], result.baseline)
    np.testing.assert_array_equal(result.random[1], result.baseline)
    again = MarginalUtility.from_dict(run.store.load_result("marginal_utility"))
    np.testing.assert_array_equal(again.targeted, result.targeted)
    with pytest.raises(DataError, match="mem must have shape"):
        marginal_utility(run, [0.5], mem=mem[:-1])
    with pytest.raises(DataError, match="n_repeats must be an integer >= 1"):
        marginal_utility(run, [0.5], mem=mem, n_repeats=0)


def test_removing_the_influencers_drops_only_the_influenced(planted, planted_run):
    run = _planted_run(planted, planted_run)
    tr, te = np.array(DUPLICATES).T
    pairs = pd.DataFrame({"train_pos": tr, "test_pos": te})
    result = remove_influencers(run, pairs=pairs, n_repeats=3)
    acc = result.accuracy
    assert result.n_repeats == 3 and result.influenced.tolist() == sorted(te)
    # Trained on S the twins are right; without their copies they are wrong.
    assert acc["full"]["influenced"].mean() >= 0.75
    assert acc["without_influencers"]["influenced"].mean() <= 0.25
    drop = acc["full"]["influenced"] - acc["without_random"]["influenced"]
    assert drop.mean() <= 0.5
    table = result.frame().set_index("condition")
    assert table.loc["full - without_influencers", "influenced_low"] > 0.5
    again = InfluencerRemoval.from_dict(result.to_dict())
    np.testing.assert_array_equal(again.accuracy["full"]["all"], acc["full"]["all"])
    with pytest.raises(DataError, match="no pairs"):
        remove_influencers(run, pairs=pairs.iloc[:0], n_repeats=1)


def test_experiments_on_a_run_are_saved_into_it(planted, planted_run):
    run = _planted_run(planted, planted_run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        mu = marginal_utility(run, [0.9], n_repeats=2)
        inf = remove_influencers(run, n_repeats=2)
    assert run.store.load_result("marginal_utility")["n_removed"] == mu.n_removed.tolist()
    assert mu.n_removed[0] >= len(DUPLICATES) + 1  # the planted examples, at least
    record = run.store.load_result("remove_influencers")
    assert record["n_models_estimated"] == 64
    assert {i for i, _ in DUPLICATES} <= set(inf.influencers.tolist())


def test_a_bf16_runs_experiments_retrain_in_bf16_through_the_given_executor(planted, tmp_path):
    class Recording:
        def __init__(self) -> None:
            self.jobs = []

        def run(self, job, chunks, on_chunk, progress=None):
            self.jobs.append((job.precision, [len(c) for c in chunks]))
            ts.execute.LocalExecutor().run(job, chunks, on_chunk, progress)

    torch.set_num_threads(1)
    recipe = dataclasses.replace(RECIPE, epochs=2)
    run = ts.Run.create(
        tmp_path / "r", planted, recipe, n_models=8, models_per_step=4, precision="bf16"
    )
    executor = Recording()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 may be emulated on this CPU; undefined mem
        run.train(progress=False, executor=executor)
        marginal_utility(
            run, [0.5], mem=np.ones(planted.n_train) * 0.0, n_repeats=2, executor=executor
        )
        tr, te = np.array(DUPLICATES).T
        remove_influencers(
            run,
            pairs=pd.DataFrame({"train_pos": tr, "test_pos": te}),
            n_repeats=2,
            executor=executor,
        )
    # Training, then the removal experiment (2 full-set models: nothing has mem >= 0.5),
    # then the influencers (3 conditions x 2 repeats, chunked by subset size).
    assert executor.jobs == [("bf16", [4, 4]), ("bf16", [2]), ("bf16", [2, 4])]


# ---- agreement ---------------------------------------------------------------------------------
def test_agreement_of_identical_estimates_is_perfect():
    mem = np.linspace(-0.1, 1, 50)
    row = memorization_agreement(mem, np.full(50, 0.05), mem, np.full(50, 0.05))
    assert row["pearson"] == pytest.approx(1) and row["spearman"] == pytest.approx(1)
    assert row["jaccard_mem"] == 1 and row["mean_abs_diff"] == 0
    assert row["expected_mean_abs_diff"] == pytest.approx(np.sqrt(2 / np.pi) * 0.05 * np.sqrt(2))
    assert jaccard([], []) == 1.0 and jaccard([1, 2], [2, 3]) == pytest.approx(1 / 3)


def test_mean_abs_difference_matches_its_expectation_from_the_ses():
    rng = np.random.default_rng(0)
    n = 20_000
    truth = rng.uniform(0, 1, n)
    se_a, se_b = rng.uniform(0.02, 0.1, n), rng.uniform(0.02, 0.1, n)
    a, b = truth + rng.normal(0, se_a), truth + rng.normal(0, se_b)
    row = memorization_agreement(a, se_a, b, se_b)
    assert abs(row["mean_abs_diff"] - row["expected_mean_abs_diff"]) < 5 * row["mean_abs_diff_se"]
    # Estimates of different quantities disagree beyond their noise.
    shifted = memorization_agreement(a, se_a, b + 0.1, se_b)
    assert (
        shifted["mean_abs_diff"] - shifted["expected_mean_abs_diff"] > 5 * row["mean_abs_diff_se"]
    )


def test_split_half_finds_the_planted_structure_in_both_halves(planted_estimates):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        a, b = split_half(planted_estimates, random_state=0)
        row = agreement(a, b)
        pairs = [
            set(zip(*h.high_influence_pairs()[["train_pos", "test_pos"]].to_numpy().T, strict=True))
            for h in (a, b)
        ]
    assert a.n_models == b.n_models == 32
    both = np.concatenate([a.masks, b.masks])
    assert sorted(map(bytes, both)) == sorted(map(bytes, np.asarray(planted_estimates.masks)))
    assert set(DUPLICATES) <= pairs[0] & pairs[1]
    assert row["pearson"] > 0.5 and row["jaccard_pairs"] > 0
    with pytest.raises(DataError, match="at least 4 models"):
        split_half(
            ts.Estimates(a.masks[:3], a.correct_train[:3], a.correct_test[:3], a.y_train, a.y_test)
        )


def test_compare_runs_saves_into_the_first_run(planted, planted_run, tmp_path):
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        other = ts.Run.create(tmp_path / "seed1", planted, RECIPE, n_models=32, seed=1)
        other.train(progress=False)
        run = ts.Run.open(planted_run.path, data=planted, model=RECIPE)
        row = compare_runs(run, other)
        compare_runs(run, other)  # comparing again replaces, never duplicates
    saved = run.store.load_result("agreement")["comparisons"]
    assert len(saved) == 1 and saved[0]["other"] == str(other.path)
    assert saved[0]["jaccard_pairs"] == row["jaccard_pairs"] > 0
    digits = ts.datasets.load("digits", n_train=300, n_test=100, random_state=0)
    unplanted = ts.Estimates(
        other.estimate().masks,
        other.estimate().correct_train,
        other.estimate().correct_test,
        digits.y_train,
        digits.y_test,
    )
    with pytest.raises(DataError, match="differ in y_train"):
        agreement(run.estimate(), unplanted)
