"""LiRA membership inference and per-example vulnerability (tailscope.scores.lira, .roc,
.vulnerability), against brute force and against a planted member/non-member split whose
Neyman-Pearson optimal ROC is known analytically."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import optimize, stats

from tailscope.errors import DataError
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.scores import (
    VARIANTS,
    gaussian_fits,
    lira_evaluation,
    lira_loo_scores,
    lira_scores,
    roc,
    roc_from_scores,
    vulnerability,
    vulnerability_by_memorization,
)

# --- ROC -------------------------------------------------------------------------------------


def brute_force_roc(pos, neg, alpha):
    """AUC over all pairs, and the best TPR over thresholds at the observed scores (and
    -inf) whose FPR is at most alpha."""
    diff = pos[:, None] - neg[None, :]
    auc = np.mean(diff > 0) + 0.5 * np.mean(diff == 0)
    best = 0.0
    for v in np.concatenate([[-np.inf], neg, pos]):
        if np.mean(neg > v) <= alpha:
            best = max(best, np.mean(pos > v))
    return auc, best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 12, 300).astype(float)  # many ties, within and across classes
    neg = rng.integers(-3, 9, 500).astype(float)
    result = roc(pos, neg, fprs=(0.0, 0.002, 0.01, 0.1, 0.5, 1.0))
    for alpha, tpr in zip(result.fprs, result.tprs, strict=True):
        assert tpr == pytest.approx(brute_force_roc(pos, neg, alpha)[1])
    assert result.auc == pytest.approx(brute_force_roc(pos, neg, 0)[0])
    assert (np.diff(result.fpr) > 0).all() and (np.diff(result.tpr) >= 0).all()
    assert result.fpr[-1] == 1 and result.tpr[-1] == 1


def test_roc_of_separable_and_identical_scores():
    perfect = roc([2.0, 3.0], [0.0, 1.0])
    assert perfect.auc == 1 and (perfect.tprs == 1).all()
    same = roc(np.ones(50), np.ones(80))
    assert same.auc == 0.5 and (same.tprs == 0).all()  # no threshold has FPR <= 1%
    flipped = roc_from_scores(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0, 0, 1, 1]) == 0)
    assert flipped.auc == 0
    with pytest.raises(DataError, match="positives and negatives"):
        roc([], [1.0])
    with pytest.raises(DataError, match="is_positive must be a boolean"):
        roc_from_scores([1.0, 2.0], [1, 0])


# --- fits and leave-one-model-out ------------------------------------------------------------


def planted(rng, n_models, n, vulnerable=0.1, ratio=0.5, dtype=np.float16):
    """phi[k, i] ~ N(mu_i + delta_i * member, sigma_i^2): every example has its own mean and
    spread; a fraction ``vulnerable`` moves by 2-4 sigma when trained on, the rest by
    0-0.5 sigma. Returns masks, phi and the truth (mu, sigma, d = delta / sigma)."""
    masks = rng.random((n_models, n)) < ratio
    mu = rng.normal(0, 3, n)
    sigma = rng.uniform(0.5, 2, n)
    d = np.where(rng.random(n) < vulnerable, rng.uniform(2, 4, n), rng.uniform(0, 0.5, n))
    phi = mu + d * sigma * masks + sigma * rng.standard_normal((n_models, n))
    return masks, phi.astype(dtype), (mu, sigma, d)


def test_gaussian_fits_match_numpy():
    rng = np.random.default_rng(0)
    masks, phi, _ = planted(rng, 9, 13, dtype=np.float64)
    masks[:, 0] = False  # never in
    masks[:3, 1], masks[3:, 1] = True, False  # 3 in
    masks[0, 2], masks[1:, 2] = True, False  # 1 in
    fits = gaussian_fits(masks, phi, chunk_size=4)
    for i in range(13):
        x_in, x_out = phi[masks[:, i], i], phi[~masks[:, i], i]
        assert fits.n_in[i] == len(x_in) and fits.n_out[i] == len(x_out)
        if len(x_in):
            assert fits.mean_in[i] == pytest.approx(x_in.mean())
        else:
            assert np.isnan(fits.mean_in[i])
        expected = x_in.var(ddof=1) if len(x_in) >= 2 else np.nan
        np.testing.assert_allclose(fits.var_in[i], expected)
        np.testing.assert_allclose(fits.var_out[i], x_out.var(ddof=1))
    ss = sum(phi[masks[:, i], i].var() * masks[:, i].sum() for i in range(1, 13))
    df = sum(max(masks[:, i].sum() - 1, 0) for i in range(13))
    assert fits.pooled_var_in == pytest.approx(ss / df)


def test_lira_scores_are_the_stated_formulas():
    rng = np.random.default_rng(1)
    masks, phi, _ = planted(rng, 40, 7, dtype=np.float64)
    fits = gaussian_fits(masks, phi)
    x = rng.normal(0, 3, 7)
    v_in = np.maximum(fits.var_in, 0.1 * fits.pooled_var_in)
    v_out = np.maximum(fits.var_out, 0.1 * fits.pooled_var_out)
    online = stats.norm.logpdf(x, fits.mean_in, np.sqrt(v_in)) - stats.norm.logpdf(
        x, fits.mean_out, np.sqrt(v_out)
    )
    np.testing.assert_allclose(lira_scores(x, fits, "online"), online, rtol=1e-10)
    offline = -stats.norm.logsf(x, fits.mean_out, np.sqrt(v_out))
    np.testing.assert_allclose(lira_scores(x, fits, "offline"), offline, rtol=1e-10)
    fixed = stats.norm.logpdf(x, fits.mean_in, np.sqrt(fits.pooled_var_in)) - stats.norm.logpdf(
        x, fits.mean_out, np.sqrt(fits.pooled_var_out)
    )
    np.testing.assert_allclose(lira_scores(x, fits, "online_fixed"), fixed, rtol=1e-10)
    np.testing.assert_array_equal(lira_scores(x, fits, "global"), x)
    with pytest.raises(DataError, match="variant must be one of"):
        lira_scores(x, fits, "median")
    with pytest.raises(DataError, match="observed must have shape"):
        lira_scores(x[:3], fits)


@pytest.mark.parametrize("variant", VARIANTS)
def test_leave_one_model_out_equals_refitting_without_the_target(variant):
    rng = np.random.default_rng(2)
    masks, phi, _ = planted(rng, 12, 17)
    masks[:, 0] = True  # always in: never evaluable
    masks[:2, 1], masks[2:, 1] = True, False  # 2 in: the in-target's shadows hold 1 in
    masks[:1, 2], masks[1:, 2] = True, False  # 1 in: not evaluable on model 0
    phi[:, 3] = 1.5  # identical values: variance 0, the floor applies
    targets = np.array([0, 3, 11])
    scores, member = lira_loo_scores(masks, phi, variant, targets=targets, chunk_size=5)
    assert scores.shape == member.shape == (3, 17)
    for t, k in enumerate(targets):
        others = np.delete(np.arange(12), k)
        fits = gaussian_fits(masks[others], phi[others])
        with np.errstate(invalid="ignore"):
            expected = lira_scores(phi[k], fits, variant)
        evaluable = (fits.n_in >= 1) & (fits.n_out >= 1)
        expected[~evaluable] = np.nan
        np.testing.assert_allclose(scores[t], expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(member[t], masks[k])
    assert np.isnan(scores[:, 0]).all() and np.isnan(scores[0, 2])
    assert np.isfinite(scores[:, 3]).all()


def ratio_confounded(rng, per_ratio, n, effect=0.0):
    """A multi-ratio pool where phi rises with the model's ratio (by 2 per 0.4) and, by
    ``effect``, with membership: pooling ratios confounds the two."""
    ratios = np.repeat([0.2, 0.5, 0.8], per_ratio)
    masks = rng.random((len(ratios), n)) < ratios[:, None]
    phi = 5 * ratios[:, None] + effect * masks + rng.standard_normal(masks.shape)
    return masks, phi, ratios


def test_mixed_ratio_shadows_confound_and_one_ratio_does_not():
    """No membership effect at all, but phi rises with the ratio: shadows of all ratios see
    members everywhere (in-models are mostly high-ratio models); the models of one ratio
    see chance; so does the ratio-stratified vulnerability."""
    rng = np.random.default_rng(12)
    masks, phi, ratios = ratio_confounded(rng, 40, 1000)
    mixed = lira_evaluation(masks, phi, variants=["online"], fprs=(0.01,)).roc["online"]
    half = ratios == 0.5
    one = lira_evaluation(masks[half], phi[half], variants=["online"], fprs=(0.01,))
    one = one.roc["online"]
    assert mixed.auc > 0.6
    assert abs(one.auc - 0.5) < 4 * one.auc_se
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        vuln_mixed, _ = vulnerability(masks, phi)
        vuln, se = vulnerability(masks, phi, ratios)
    assert np.nanmean(vuln_mixed) > 0.65
    z = (vuln - 0.5) / se
    assert abs(np.nanmean(z)) < 4 / np.sqrt(np.isfinite(z).sum())
    assert 0.92 < np.nanmean(np.abs(z) < 1.96) < 0.98


def test_vulnerability_with_ratios_counts_within_ratio_pairs():
    rng = np.random.default_rng(13)
    masks, phi, ratios = ratio_confounded(rng, 5, 12, effect=0.5)
    phi = np.round(phi)  # ties
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        vuln, _ = vulnerability(masks, phi, ratios, chunk_size=5)
    for i in range(12):
        wins = pairs = 0.0
        for r in np.unique(ratios):
            rows = ratios == r
            a, b = phi[rows & masks[:, i], i], phi[rows & ~masks[:, i], i]
            wins += (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
            pairs += len(a) * len(b)
        np.testing.assert_allclose(vuln[i], wins / pairs if pairs else np.nan)


def test_evaluation_pools_the_leave_one_out_scores():
    rng = np.random.default_rng(3)
    masks, phi, _ = planted(rng, 16, 300)
    evaluation = lira_evaluation(masks, phi, fprs=(0.01, 0.1))
    assert list(evaluation.roc) == list(VARIANTS)
    for variant in ("online", "offline", "global"):
        scores, member = lira_loo_scores(masks, phi, variant)
        valid = ~np.isnan(scores)
        expected = roc(scores[member & valid], scores[~member & valid], (0.01, 0.1))
        got = evaluation.roc[variant]
        # Scores are ranked in float32 (offline by its z-score), so ties may differ slightly.
        assert got.auc == pytest.approx(expected.auc, abs=1e-4)
        np.testing.assert_allclose(got.tprs, expected.tprs, atol=2 / expected.n_pos)
    assert evaluation.n_pairs + evaluation.n_excluded == 16 * 300
    assert evaluation.n_members == int(masks.sum())  # every pair is evaluable here
    frame = evaluation.frame()
    assert list(frame.columns) == ["variant", "auc", "auc_se", "tpr@0.01", "tpr@0.1"]
    fpr, tpr = evaluation.roc_curve("online")
    assert (np.diff(fpr) > 0).all() and fpr[-1] == 1 and tpr[-1] == 1


def test_per_example_tpr_averages_to_the_pooled_tpr():
    """Per-example TPR at the global threshold, weighted by each example's member targets,
    is the pooled TPR at that threshold."""
    rng = np.random.default_rng(4)
    masks, phi, _ = planted(rng, 24, 500)
    evaluation = lira_evaluation(masks, phi, fprs=(0.01,), example_fpr=0.01)
    weights = masks.sum(axis=0)
    for variant, per_example in evaluation.example_tpr.items():
        pooled = np.nansum(per_example * weights) / weights.sum()
        assert pooled == pytest.approx(evaluation.roc[variant].tprs[0], abs=1e-12)


def test_evaluation_on_a_subset_of_targets_and_bad_input():
    rng = np.random.default_rng(5)
    masks, phi, _ = planted(rng, 10, 50)
    evaluation = lira_evaluation(masks, phi, targets=[7, 2], variants=["online"])
    np.testing.assert_array_equal(evaluation.targets, [2, 7])
    assert evaluation.n_pairs == 2 * 50
    with pytest.raises(DataError, match="targets must lie in"):
        lira_evaluation(masks, phi, targets=[10])
    with pytest.raises(DataError, match="phi has shape"):
        lira_evaluation(masks, phi[:, :5])
    bad = phi.astype(np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(DataError, match="phi contains NaN"):
        lira_evaluation(masks, bad)
    with pytest.raises(DataError, match="var_floor"):
        lira_evaluation(masks, phi, var_floor=0)
    with pytest.raises(DataError, match="at least once in and once out"):
        lira_evaluation(np.ones_like(masks), phi)


def test_small_shadow_sets_stay_finite():
    """Four models, examples whose in or out set has one or two values, and float16 phi
    that round alike (every per-example and pooled variance is 0): every evaluable pair
    gets a finite score."""
    rng = np.random.default_rng(6)
    masks = rng.random((4, 200)) < 0.5
    phi = np.round(rng.normal(5, 0.01, (4, 200)) + masks, 1).astype(np.float16)
    for variant in ("online", "offline"):
        scores, _ = lira_loo_scores(masks, phi, variant)
        evaluable = ~np.isnan(scores)
        assert evaluable.any() and np.isfinite(scores[evaluable]).all()
    evaluation = lira_evaluation(masks, phi, fprs=(0.1,))
    assert evaluation.roc["online"].auc > 0.9  # members differ by 100 standard deviations


# --- the planted split with a known optimal ROC ----------------------------------------------


def optimal_roc(d, n_pos, n_neg, fprs):
    """Neyman-Pearson optimal pooled ROC when each example's in/out distributions are known.

    For example i the log likelihood ratio is N(-d^2/2, d^2) out and N(+d^2/2, d^2) in, so
    thresholding it globally gives FPR(tau) = sum_i w_i sf((tau + d_i^2/2) / d_i) and
    TPR(tau) = sum_i u_i sf((tau - d_i^2/2) / d_i), with w, u each example's share of the
    negative and positive pairs, and AUC = sum_ij u_i w_j Phi((d_i^2 + d_j^2) / 2 /
    sqrt(d_i^2 + d_j^2)). Returns (auc, tprs, likelihood ratio at each FPR).
    """
    u, w = n_pos / n_pos.sum(), n_neg / n_neg.sum()
    s2 = d[:, None] ** 2 + d[None, :] ** 2
    auc = float(u @ stats.norm.cdf(np.sqrt(s2) / 2) @ w)

    def fpr(tau):
        return w @ stats.norm.sf((tau + d**2 / 2) / d)

    tprs, slopes = [], []
    for alpha in fprs:
        tau = optimize.brentq(lambda t, a=alpha: fpr(t) - a, -100, 100, xtol=1e-12)
        tprs.append(u @ stats.norm.sf((tau - d**2 / 2) / d))
        slopes.append(np.exp(tau))
    return auc, np.array(tprs), np.array(slopes)


def tpr_se(tpr, slope, alpha, n_pos, n_neg):
    """SE of an empirical TPR at an empirical FPR alpha (delta method): binomial noise of the
    positives above a threshold plus that of the threshold, times the ROC's slope."""
    return np.sqrt(tpr * (1 - tpr) / n_pos + slope**2 * alpha * (1 - alpha) / n_neg)


@pytest.fixture(scope="module")
def planted_run():
    """4096 models x 128 examples: 2**19 (target, example) pairs, and 2048 shadows a side,
    so the online attack's plug-in loss (second order in the fit errors, O(1 / 2048) in
    AUC) is below the AUC's sampling error."""
    rng = np.random.default_rng(7)
    masks, phi, truth = planted(rng, 4096, 128)
    evaluation = lira_evaluation(masks, phi)
    return masks, phi, truth, evaluation


def test_oracle_attack_reaches_the_analytic_optimum(planted_run):
    """The check of the check: the attack that knows every mu_i, sigma_i and d_i has the
    analytic AUC and TPRs up to sampling error (so the harness and roc() are right)."""
    masks, phi, (mu, sigma, d), _ = planted_run
    llr = d * (phi.astype(np.float64) - mu) / sigma - d**2 / 2
    oracle = roc_from_scores(llr, masks)
    auc, tprs, slopes = optimal_roc(d, masks.sum(0), (~masks).sum(0), oracle.fprs)
    assert abs(oracle.auc - auc) < 4 * oracle.auc_se
    se = tpr_se(tprs, slopes, oracle.fprs, oracle.n_pos, oracle.n_neg)
    assert (np.abs(oracle.tprs - tprs) < 4 * se).all()


def test_online_lira_approaches_the_optimum_and_beats_offline_and_global(planted_run):
    masks, _, (_, _, d), evaluation = planted_run
    online = evaluation.roc["online"]
    auc, tprs, slopes = optimal_roc(d, masks.sum(0), (~masks).sum(0), online.fprs)
    se = tpr_se(tprs, slopes, online.fprs, online.n_pos, online.n_neg)
    # Optimal up to sampling error (4 SE) plus the plug-in loss of 2048 shadows a side:
    # about 1.3 / 2048 in AUC in this design (measured over K = 64..1024: 0.67..1.3 / K_side).
    assert auc - 4 * online.auc_se - 2.0 / 2048 < online.auc < auc + 4 * online.auc_se
    assert (online.tprs > tprs - 4 * se - 0.005).all()
    assert (online.tprs < tprs + 4 * se).all()
    # The paper's ordering at low FPR: online above offline above the global threshold.
    # The gaps here are many times the SE of a difference (at most the SEs' sum).
    for weaker in ("offline", "global"):
        other = evaluation.roc[weaker]
        other_se = tpr_se(other.tprs, slopes, other.fprs, other.n_pos, other.n_neg)
        assert (online.tprs - other.tprs > 4 * (se + other_se)).all()
        assert online.auc - other.auc > 4 * (online.auc_se + other.auc_se)
    assert evaluation.roc["offline"].tprs[0] > evaluation.roc["global"].tprs[0]


def test_per_example_tpr_and_vulnerability_find_the_vulnerable_examples(planted_run):
    masks, phi, (_, _, d), evaluation = planted_run
    exposed = d >= 2
    tpr = evaluation.example_tpr["online"]
    # At 0.1% FPR the threshold is beyond every weak example's reach and within the strong
    # ones': the 128 examples split cleanly.
    assert tpr[exposed].min() > tpr[~exposed].max()
    vuln, se = vulnerability(masks, phi)
    # The per-example AUC of two Gaussians d apart is Phi(d / sqrt 2).
    z = (vuln - stats.norm.cdf(d / np.sqrt(2))) / se
    assert np.mean(np.abs(z) < 1.96) > 0.9
    assert np.abs(z).max() < 5


# --- vulnerability ---------------------------------------------------------------------------


def test_vulnerability_matches_brute_force_with_ties():
    rng = np.random.default_rng(8)
    masks = rng.random((15, 20)) < 0.6
    masks[:, 0] = True
    phi = rng.integers(0, 4, (15, 20)).astype(np.float16)
    with pytest.warns(UndefinedEstimateWarning, match="1 of 20 examples"):
        vuln, se = vulnerability(masks, phi, chunk_size=3)
    assert np.isnan(vuln[0]) and np.isnan(se[0])
    for i in range(1, 20):
        expected, _ = brute_force_roc(phi[masks[:, i], i], phi[~masks[:, i], i], 0)
        assert vuln[i] == pytest.approx(expected)
    assert (se[1:] > 0).all()


def test_vulnerability_by_memorization_table():
    rng = np.random.default_rng(9)
    mem = rng.uniform(-0.2, 1, 5000)
    vuln = 0.5 + 0.4 * np.clip(mem, 0, 1) + rng.normal(0, 0.02, 5000)
    vuln[:7] = np.nan
    table = vulnerability_by_memorization(vuln, mem)
    assert list(table["mem_bin"]) == [
        "< 0.1",
        "[0.1, 0.25)",
        "[0.25, 0.5)",
        "[0.5, 0.75)",
        ">= 0.75",
    ]
    assert table["count"].sum() == 4993
    assert (np.diff(table["vulnerability_mean"]) > 0).all()
    assert table.attrs["spearman"] > 0.9
    in_bin = (mem >= 0.25) & (mem < 0.5) & ~np.isnan(vuln)
    assert table["vulnerability_mean"][2] == pytest.approx(vuln[in_bin].mean())
    assert table["count"][2] == in_bin.sum()
    with pytest.raises(DataError, match="bins must be increasing"):
        vulnerability_by_memorization(vuln, mem, bins=(0.5, 0.1))


def test_the_reports_figures_draw_from_the_saved_evaluation():
    from tailscope.report import plots

    rng = np.random.default_rng(10)
    masks, phi, _ = planted(rng, 16, 200)
    evaluation = lira_evaluation(masks, phi)
    curves = {variant: evaluation.roc_curve(variant) for variant in evaluation.roc}
    uri = plots.roc_loglog(curves, evaluation.frame().to_dict("records"))
    assert uri.startswith("data:image/png;base64,") and len(uri) > 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        vuln, _ = vulnerability(masks, phi)
    mem = rng.uniform(-0.1, 1, 200)
    by_bin = vulnerability_by_memorization(vuln, mem).to_dict("records")
    assert plots.vulnerability_plot(vuln, mem, by_bin).startswith("data:image/png;base64,")
