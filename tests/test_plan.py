import numpy as np
import pytest

from tailscope.errors import DataError
from tailscope.plan import SubsetPlan, subset_size


def test_every_mask_has_exactly_m_members():
    plan = SubsetPlan.random(50, 101, ratio=0.7, random_state=3)
    assert plan.masks.shape == (50, 101)
    assert plan.masks.dtype == np.bool_
    assert (plan.masks.sum(axis=1) == round(0.7 * 101)).all()
    assert subset_size(101, 0.7) == 71
    assert np.all(plan.ratios == 0.7)


def test_same_seed_same_plan_and_prefix_property():
    a = SubsetPlan.random(20, 40, random_state=1)
    b = SubsetPlan.random(20, 40, random_state=1)
    c = SubsetPlan.random(30, 40, random_state=1)
    d = SubsetPlan.random(20, 40, random_state=2)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.seeds, b.seeds)
    # Model k depends only on (seed, k): a larger plan starts with the smaller one.
    assert np.array_equal(c.masks[:20], a.masks) and np.array_equal(c.seeds[:20], a.seeds)
    assert not np.array_equal(a.masks, d.masks)
    assert len(np.unique(a.seeds)) == 20


def test_membership_is_uniform():
    # Each example is in a subset with probability m/n; over K models its count is
    # Binomial(K, m/n). Check the mean over examples within 5 SE of K*m/n.
    k, n = 400, 50
    plan = SubsetPlan.random(k, n, ratio=0.3, random_state=0)
    counts = plan.masks.sum(axis=0)
    p = subset_size(n, 0.3) / n
    assert abs(counts.mean() - k * p) < 5 * np.sqrt(k * p * (1 - p) / n)
    # No example is systematically favoured: the largest count is not an outlier.
    assert counts.max() - k * p < 5 * np.sqrt(k * p * (1 - p))


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5, float("nan"), "x"])
def test_bad_ratio(ratio):
    with pytest.raises(DataError, match="ratio"):
        SubsetPlan.random(10, 10, ratio=ratio)


@pytest.mark.parametrize("k", [0, 1, 2.5, True])
def test_bad_n_models(k):
    with pytest.raises(DataError, match="n_models"):
        SubsetPlan.random(k, 10)


def test_subset_size_keeps_every_example_able_to_be_in_and_out():
    assert subset_size(10, 0.01) == 1
    assert subset_size(10, 0.99) == 9
    with pytest.raises(DataError):
        subset_size(1, 0.5)


def test_unequal_masks_rejected():
    masks = np.zeros((2, 4), dtype=bool)
    masks[0, :2] = True
    masks[1, :3] = True
    with pytest.raises(DataError, match="same number"):
        SubsetPlan(masks=masks, seeds=np.arange(2), ratios=np.array([0.5, 0.5]))
    SubsetPlan(masks=masks, seeds=np.arange(2), ratios=np.array([0.5, 0.75]))  # two ratios


def test_a_multi_ratio_plan_holds_n_models_per_ratio_ratio_by_ratio():
    plan = SubsetPlan.random(4, 20, ratio=(0.1, 0.5, 0.9), random_state=0)
    assert plan.masks.shape == (12, 20)
    assert plan.masks.sum(axis=1).tolist() == [2] * 4 + [10] * 4 + [18] * 4
    assert [(r, m.tolist()) for r, m in plan.groups()] == [
        (0.1, [0, 1, 2, 3]),
        (0.5, [4, 5, 6, 7]),
        (0.9, [8, 9, 10, 11]),
    ]
    # The first ratio's models are a one-ratio plan's.
    one = SubsetPlan.random(4, 20, ratio=0.1, random_state=0)
    assert np.array_equal(one.masks, plan.masks[:4])
    with pytest.raises(DataError, match="must not repeat"):
        SubsetPlan.random(4, 20, ratio=(0.5, 0.5))


def test_chunks_stay_within_a_ratio_and_cover_what_is_left_to_do():
    plan = SubsetPlan.random(5, 20, ratio=(0.3, 0.6), random_state=0)
    assert [c.tolist() for c in plan.chunks(2)] == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]
    todo = np.zeros(10, dtype=bool)
    todo[[3, 9]] = True
    assert [c.tolist() for c in plan.chunks(2, todo=todo)] == [[2, 3], [9]]
