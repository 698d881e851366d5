"""The run's analysis, its HTML report and the analysis commands of the CLI.

The numbers are checked on :func:`tailscope.experiments.analyze`'s result; the report must
render them as one self-contained file (every image a data URI, nothing fetched), escape
every string that comes from data, and render in headless Chromium with every image decoded
and no error.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import torch

import tailscope as ts
from tailscope.cli import main
from tailscope.estimate import UndefinedEstimateWarning
from tailscope.experiments import analyze, mirror_pair_count, pair_summary, split_half
from tailscope.report import render_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
    "--dump-dom",
]
# Installed first in <head>: records every error event (resource errors too, via capture) and,
# once the page has loaded, writes into the DOM how many images there are and which failed.
CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(
  String(e.message || (e.target && e.target.outerHTML.slice(0, 60)))), true);
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const failed = images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt);
  const out = document.createElement("pre");
  out.id = "tailscope-check";
  out.textContent = JSON.stringify({images: images.length, failed, errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def digits_run(digits, tmp_path_factory):
    """16 models of the built-in MLP (3 epochs) on the 300/100 digits subset."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("report") / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        run = ts.Run.create(path, digits, "mlp", n_models=16, epochs=3, seed=0)
        return run.train(progress=False)


def _render_in_chromium(html_text: str, tmp_path) -> tuple[dict, str]:
    page = tmp_path / "page.html"
    page.write_text(html_text.replace("<head>", "<head>" + CHECK_SCRIPT, 1), encoding="utf-8")
    done = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="tailscope-check">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium did not render the page: {done.stderr[-2000:]}"
    check = json.loads(html.unescape(found.group(1)))
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    return check, "\n".join(console)


def _quiet_report(run, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        return render_report(run, **options)


def _quiet_analysis(run, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        return analyze(run, **options)


# ---- the analysis ------------------------------------------------------------------------------
def test_the_analysis_holds_every_table_the_report_shows(digits_run, tmp_path):
    released = tmp_path / "paper_like.npz"
    np.savez(
        released, tr_idx=[1, 2, 2], tt_idx=[7, 7, 8], infl=[0.2, 0.3, 0.5], mem=[0.3, 0.9, 0.9]
    )
    result = _quiet_analysis(digits_run, infl=0.1, mem=0.1, released=[released], gallery_size=5)
    est = result.estimates
    overview = result.overview
    assert overview["models"] == 16 and overview["ratios"] == [0.7]
    assert overview["precision"] == "fp32" and overview["analysis_ratio"] == 0.7
    assert overview["test_accuracy"] == pytest.approx(np.mean(est.correct_test))
    assert overview["worst_se"] == pytest.approx(np.sqrt(0.25 / (0.7 * 16) + 0.25 / (0.3 * 16)))
    assert result.noisy  # 16 models: an SE of up to 0.27
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        assert result.pairs.equals(est.high_influence_pairs(infl=0.1, mem=0.1))
        assert result.mirror_pairs == mirror_pair_count(est, infl=0.1, mem=0.1)
        halves = split_half(est, random_state=0)
        half_mem = halves[0].memorization
    assert result.pair_summary == pair_summary(
        result.pairs["train_pos"], result.pairs["test_pos"], 100
    )
    assert result.split_half["models_a"] == result.split_half["models_b"] == 8
    np.testing.assert_array_equal(result.halves_mem[0], half_mem)
    assert len(result.most) == len(result.least) == 5
    assert np.nanmax(est.memorization) == est.memorization[result.most[0]]
    assert result.distribution.n_defined == int(np.sum(~np.isnan(est.memorization)))
    assert result.marginal_utility is None and result.influencers is None
    assert result.comparisons == []
    # The released file's summary row: 3 pairs, 2 unique test, 1 single, 2 train, max 2.
    name, frame, summary = result.released[0]
    assert name == "paper_like" and len(frame) == 3
    assert (summary["pairs"], summary["unique_test"], summary["single_influencer_tests"]) == (
        3,
        2,
        1,
    )
    assert (summary["unique_train"], summary["max_influencers_per_test"]) == (2, 2)


# ---- the report --------------------------------------------------------------------------------
def test_report_is_self_contained_and_lists_every_analysis(digits_run, tmp_path):
    released = tmp_path / "paper_like.npz"
    np.savez(
        released, tr_idx=[1, 2, 2], tt_idx=[7, 7, 8], infl=[0.2, 0.3, 0.5], mem=[0.3, 0.9, 0.9]
    )
    page = _quiet_report(digits_run, released=[released], gallery_size=5)
    for section in (
        "overview",
        "memorization",
        "pairs",
        "agreement",
        "marginal-utility",
        "influencers",
        "released-paper-like",
    ):
        assert f'<section id="{section}">' in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page
    # 5 most + 5 least memorized train images, and pairs as train+test images.
    assert page.count('alt="train example') >= 10
    assert "Not run yet" in page  # no experiment saved in this run yet


def test_report_escapes_strings_from_data(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(60, 6, 6), dtype=np.uint8)
    y = np.arange(60) % 2
    names = ['<script>alert("x")</script>', "a & b"]
    data = ts.datasets.from_arrays(
        x[:40], y[:40], x[40:], y[40:], class_names=names, name="<b>evil</b>"
    )
    path = tmp_path / 'run "<i>&'
    recipe = ts.Recipe(
        name="<em>r</em>",
        build=lambda s, c: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, c)),
        epochs=1,
        batch_size=8,
        lr=0.1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        ts.Run.create(path, data, recipe, n_models=8, seed=0).train(progress=False)
    page = _quiet_report(ts.Run.open(path, data=data))
    for raw in (*names, "<b>evil</b>", "<em>r</em>", '"<i>&'):
        assert raw not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page and "a &amp; b" in page
    assert 'alt="train example' in page  # the images come from the arrays passed in
    # Reopened without its arrays, the report still renders and says why there are no images.
    page = _quiet_report(ts.Run.open(path))
    assert "no images: the dataset could not be loaded" in page
    assert 'alt="train example' not in page


def test_report_of_feature_vectors_has_no_gallery_images(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(80, 5)), np.arange(80) % 2
    data = ts.datasets.from_arrays(x[:60], y[:60], x[60:], y[60:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        run = ts.Run.create(tmp_path / "run", data, "mlp", n_models=4, epochs=1, seed=0)
        run.train(progress=False)
    page = _quiet_report(run)
    assert "feature vectors, not images" in page
    assert 'alt="train example' not in page


# ---- the CLI ----------------------------------------------------------------------------------
def _copy(run, tmp_path):
    """A copy of the shared run, so a test that saves results into it leaves it untouched."""
    return shutil.copytree(run.path, tmp_path / "copy")


def test_cli_experiments_then_report_shows_them(digits_run, tmp_path, capsys):
    run_dir = str(_copy(digits_run, tmp_path))
    assert (
        main(
            [
                "experiment",
                "removal",
                run_dir,
                "--thresholds",
                "0.3,0.6",
                "--repeats",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "theta 0.30" in out and "theta 0.60" in out
    argv = ["experiment", "influencers", run_dir, "--repeats", "2", "--quiet", "--fdr", "none"]
    assert main(argv) == 0  # 16 models: no finding at FDR 0.1, so the plain rule
    assert "without_influencers" in capsys.readouterr().out
    assert main(["compare", run_dir]) == 0
    assert "split-half" in capsys.readouterr().out
    result = _quiet_analysis(ts.Run.open(run_dir))
    assert result.marginal_utility.thresholds.tolist() == [0.3, 0.6]
    assert result.marginal_utility.n_repeats == 2 and result.influencers.n_repeats == 2
    report = tmp_path / "report.html"
    assert main(["report", run_dir, "-o", str(report), "--gallery", "4"]) == 0
    page = report.read_text(encoding="utf-8")
    assert "Not run yet" not in page
    assert "acc. without mem &gt;= theta" in page and "S minus the influencers" in page


def test_cli_compare_two_runs_saves_into_the_first(digits, digits_run, tmp_path, capsys):
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        other = ts.Run.create(tmp_path / "b", digits, "mlp", n_models=8, epochs=3, seed=1)
        other.train(progress=False)
    copy = _copy(digits_run, tmp_path)
    assert main(["compare", str(copy), str(other.path)]) == 0
    assert "saved into" in capsys.readouterr().out
    result = _quiet_analysis(ts.Run.open(copy))
    assert [c["other"] for c in result.comparisons] == [str(other.path)]
    assert "Saved comparisons" in _quiet_report(ts.Run.open(copy))


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["report", "{tmp}/nothing"], 1, "does not exist"),
        (["experiment", "removal", "{run}", "--thresholds", "a,b"], 2, "comma-separated numbers"),
        (
            ["experiment", "influencers", "{run}", "--repeats", "0"],
            2,
            "--repeats must be at least 1",
        ),
        (["experiment", "influencers", "{run}", "--infl", "2"], 1, "no high-influence pairs"),
        (["compare", "{run}", "{tmp}/nothing"], 1, "does not exist"),
        (["report", "{run}", "--released", "{tmp}/none.npz"], 1, "does not exist"),
    ],
)
def test_cli_bad_input_fails_with_one_line(digits_run, tmp_path, capsys, argv, code, message):
    argv = [a.format(tmp=tmp_path, run=digits_run.path) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]
    assert len(errors) == 1 and message in errors[0]


# ---- rendering in a browser -----------------------------------------------------------------
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(digits_run, tmp_path):
    released = tmp_path / "cifar100_like.npz"
    np.savez(released, tr_idx=[1, 2], tt_idx=[7, 8], infl=[0.2, 0.5], mem=[0.3, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedEstimateWarning)
        report = write_report(digits_run, tmp_path / "report.html", released=[released])
    html_text = report.read_text(encoding="utf-8")
    check, console = _render_in_chromium(html_text, tmp_path)
    assert check["images"] == html_text.count("<img ") > 10
    assert check["failed"] == [] and check["errors"] == []
    assert console == ""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_chromium_check_catches_broken_pages(tmp_path):
    broken = (
        "<!DOCTYPE html><html><head></head><body>"
        '<img src="data:image/png;base64,AAAA" alt="corrupt"><img src="missing.png" alt="gone">'
        '<script>console.error("boom")</script></body></html>'
    )
    check, console = _render_in_chromium(broken, tmp_path)
    assert check["failed"] == ["corrupt", "gone"] and len(check["errors"]) == 2
    assert "boom" in console
