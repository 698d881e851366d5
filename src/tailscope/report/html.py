"""The HTML report of a run: one self-contained file with every analysis the run has.

``write_report(run, "report.html")`` renders, in order,

1. an overview (dataset, recipe, K, accuracy, standard errors and what they allow);
2. the memorization distribution: histogram overall and per class, threshold fractions, and
   galleries of the most and least memorized train examples (image, label, mem +- se);
3. the high-influence pairs: the paper's summary row, histograms, a gallery (train image
   beside test image, infl +- se, mem) and a table;
4. agreement: split-half reliability of the run itself, and any saved ``tailscope compare``;
5. marginal utility and removing the influencers, when their experiments were run;
6. the paper's released pair files, when given.

The numbers come from :func:`tailscope.experiments.analyze`; this module only renders them.
Plots and images are embedded as PNG data URIs; every string that comes from data (names,
paths, labels) passes through :func:`html.escape`.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tailscope import __version__
from tailscope.errors import TailscopeError
from tailscope.estimate import Estimates
from tailscope.experiments import InfluencerRemoval, RunAnalysis, analyze, interval
from tailscope.report import plots

__all__ = ["render_report", "write_report"]

#: Above this median standard error of the pairs, a pair near the threshold may be noise.
NOISY_SE = 0.05

_CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 0 1.5em;
       color: #222; line-height: 1.4; }
h1 { margin-top: 1em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f5f8; } td.text, th.text { text-align: left; }
.note { background: #fff7e0; border-left: 4px solid #e0b040; padding: .4em .8em; }
.muted { color: #666; font-size: .9em; }
.gallery { display: flex; flex-wrap: wrap; gap: .5em; }
figure.example { margin: 0; width: 96px; text-align: center; font-size: .75em; }
figure.example img, figure.pair img { width: 84px; height: 84px; image-rendering: pixelated;
       border: 1px solid #ccc; }
figure.pair { margin: 0; width: 200px; text-align: center; font-size: .75em; }
figure.pair div { display: flex; justify-content: space-around; }
img.plot { max-width: 100%; }
nav ul { columns: 2; }
"""


def write_report(run, path: str | os.PathLike, **options: object) -> Path:
    """Render :func:`render_report` for ``run`` and write it to ``path`` (UTF-8)."""
    path = Path(path)
    path.write_text(render_report(run, **options), encoding="utf-8")
    return path


def render_report(
    run,
    *,
    infl: float = 0.15,
    mem: float = 0.25,
    fdr: float | None = 0.1,
    released: Sequence[str | os.PathLike] = (),
    gallery_size: int = 24,
    max_pair_rows: int = 200,
    split_half_seed: int = 0,
) -> str:
    """The report of ``run`` (a :class:`tailscope.Run`) as one HTML string.

    Args:
        run: the run; its finished models are analysed (:func:`tailscope.experiments.analyze`).
        infl, mem: the pair selection thresholds (the paper's 0.15 and 0.25).
        fdr: findings at this false discovery rate; None: the paper's plain rule.
        released: paths of released pair files to show beside the run.
        gallery_size: examples (and pairs) per gallery.
        max_pair_rows: rows of the pair table.
        split_half_seed: seed of the split of the models into two halves.
    """
    analysis = analyze(
        run,
        infl=infl,
        mem=mem,
        fdr=fdr,
        released=released,
        gallery_size=gallery_size,
        split_half_seed=split_half_seed,
    )
    images = _Images.of(run, analysis.estimates)
    sections = [
        _overview(analysis),
        _distribution_section(analysis, images),
        _pairs_section(analysis, images, gallery_size, max_pair_rows),
        _agreement_section(analysis),
        _marginal_utility_section(analysis),
        _influencers_section(analysis),
        *_score_sections(analysis, images, gallery_size),
        *(_released_section(name, frame, summary) for name, frame, summary in analysis.released),
    ]
    spec = run.spec
    title = f"tailscope report: {spec.dataset.name} / {spec.recipe['name']}"
    toc = "".join(f'<li><a href="#{sid}">{_e(name)}</a></li>' for sid, name, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{_e(name)}</h2>{content}</section>'
        for sid, name, content in sections
    )
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><p class="muted">run {_e(run.path)} &middot; tailscope '
        f"{_e(__version__)} &middot; {_e(created)}</p><nav><ul>{toc}</ul></nav>{body}"
        "</body></html>\n"
    )


# ---- formatting helpers -------------------------------------------------------------------
def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, digits: int = 3) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return f"{int(value):,}"
    value = float(value)
    return "&ndash;" if np.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float, digits: int = 2) -> str:
    return "&ndash;" if value is None or np.isnan(value) else f"{100 * value:.{digits}f}%"


def _ci(ci: dict[str, float], percent: bool = True) -> str:
    scale, unit = (100, "%") if percent else (1, "")
    if np.isnan(ci["low"]):
        return f"{scale * ci['mean']:.2f}{unit}"
    half = scale * (ci["high"] - ci["low"]) / 2
    return f"{scale * ci['mean']:.2f} &plusmn; {half:.2f}{unit}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns=()) -> str:
    """A table; ``rows`` hold already formatted (escaped) cells."""

    def cell(tag: str, i: int, content: str) -> str:
        cls = ' class="text"' if i in text_columns else ""
        return f"<{tag}{cls}>{content}</{tag}>"

    head = "".join(cell("th", i, _e(h)) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot(uri: str, alt: str) -> str:
    return f'<p><img class="plot" src="{uri}" alt="{_e(alt)}"></p>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


class _Images:
    """Raw train/test images of a run's dataset as PNG data URIs, addressed by source index."""

    def __init__(self, x_train: np.ndarray, x_test: np.ndarray, est: Estimates) -> None:
        self.x_train, self.x_test = x_train, x_test
        self.vmin = float(min(x_train.min(), x_test.min()))
        self.vmax = float(max(x_train.max(), x_test.max()))
        self.train_pos = pd.Index(est.train_index)
        self.test_pos = pd.Index(est.test_index)

    @classmethod
    def of(cls, run, est: Estimates) -> _Images | str:
        """The images of ``run``'s dataset, or a sentence saying why there are none."""
        try:
            data = run.dataset
        except TailscopeError as e:
            return f"no images: the dataset could not be loaded ({e})"
        if not data.is_image:
            return "no images: the dataset's examples are feature vectors, not images"
        return cls(data.x_train, data.x_test, est)

    def train(self, source_index: int) -> str:
        return self._img(self.x_train[self.train_pos.get_loc(source_index)], "train", source_index)

    def test(self, source_index: int) -> str:
        return self._img(self.x_test[self.test_pos.get_loc(source_index)], "test", source_index)

    def _img(self, image: np.ndarray, split: str, index: int) -> str:
        uri = plots.image_uri(image, self.vmin, self.vmax)
        return f'<img src="{uri}" alt="{split} example {int(index)}">'


# ---- sections ------------------------------------------------------------------------------
def _overview(analysis: RunAnalysis) -> tuple[str, str, str]:
    o = analysis.overview
    hyper = ", ".join(f"{key}={value}" for key, value in o["recipe"].items() if key != "name")
    ratios = ", ".join(f"{r:g}" for r in o["ratios"])
    if len(o["ratios"]) > 1:
        ratios += f" (estimates use the models of ratio {o['analysis_ratio']:g})"
    rows = [
        ["dataset", _e(o["dataset"])],
        ["train / test examples", f"{o['n_train']:,} / {o['n_test']:,}"],
        ["recipe", f"{_e(o['recipe']['name'])} ({_e(hyper)})"],
        ["precision", _e(o["precision"])],
        ["models K (finished / planned)", f"{o['models']:,} / {o['models_planned']:,}"],
        ["subset ratio m/n", _e(ratios)],
        ["mean test accuracy of the subset models", _pct(o["test_accuracy"])],
        ["mean SE of mem", _num(o["mean_mem_se"])],
        ["worst-case SE of one estimate (p = 1/2)", _num(o["worst_se"])],
    ]
    content = _table(["", "value"], rows, text_columns=(0, 1))
    if analysis.noisy:
        worst = o["worst_se"]
        content += _note(
            f"With K = {o['models']:,} models a single estimate has a standard error of up to "
            f"{worst:.3f}: differences of memorization or influence below about "
            f"{4 * worst:.2f} are not distinguishable from noise, and many pairs selected at "
            "infl &ge; 0.15 may be noise (the paper used K = 2,000&ndash;4,000, SE &le; 0.024)."
        )
    return "overview", "Overview", content


def _distribution_section(analysis: RunAnalysis, images) -> tuple[str, str, str]:
    est, dist, class_names = analysis.estimates, analysis.distribution, analysis.class_names
    head = ["", "examples", "mean mem"] + [f"mem >= {t:g}" for t in dist.thresholds]
    rows = [["all", _num(dist.n_defined), _num(dist.mean)] + [_pct(f) for f in dist.above]]
    for c, name in enumerate(class_names):
        rows.append(
            [_e(name), _num(int(dist.class_count[c])), _num(dist.class_mean[c])]
            + [_pct(f) for f in dist.class_above[c]]
        )
    content = (
        "<p>Memorization <code>mem(i) = P[h(x_i) = y_i | i in S] - P[h(x_i) = y_i | i not in S]"
        "</code>: how much more often the models that trained on example i classify it "
        "correctly than the models that did not.</p>"
        + _plot(plots.memorization_histogram(dist), "histogram of memorization")
        + _table(head, rows, text_columns=(0,))
        + _findings_table(analysis, "memorization")
        + _plot(plots.class_histograms(dist, class_names), "memorization per class")
    )
    if dist.n_undefined:
        content += _note(
            f"{dist.n_undefined:,} examples were in every subset or in none and have no estimate."
        )
    for title, chosen in (("Most memorized", analysis.most), ("Least memorized", analysis.least)):
        content += f"<h3>{title} train examples</h3>" + _example_gallery(
            est, chosen, class_names, images
        )
    return "memorization", "Memorization distribution", content


def _example_gallery(est: Estimates, positions: np.ndarray, class_names, images) -> str:
    if isinstance(images, str):
        return f'<p class="muted">{_e(images)}</p>' + _table(
            ["train index", "label", "mem", "se"],
            [
                [
                    str(int(est.train_index[p])),
                    _e(class_names[est.y_train[p]]),
                    _num(est.memorization[p]),
                    _num(est.memorization_se[p]),
                ]
                for p in positions
            ],
            text_columns=(1,),
        )
    figures = []
    for p in positions:
        index = int(est.train_index[p])
        figures.append(
            f'<figure class="example">{images.train(index)}<figcaption>#{index} '
            f"{_e(class_names[est.y_train[p]])}<br>{est.memorization[p]:.2f} &plusmn; "
            f"{est.memorization_se[p]:.2f}</figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(figures)}</div>'


def _findings_table(analysis: RunAnalysis, table: str) -> str:
    """Findings at the run's FDR beside the plain and mirrored threshold counts and the
    models an effect of the threshold's size needs (nothing with ``fdr=None``)."""
    found = analysis.findings
    if found is None:
        return ""
    row = getattr(found, table)
    effect = found.mem if table == "memorization" else found.infl
    what = (
        f"mem &ge; {found.mem:g}"
        if table == "memorization"
        else f"infl &ge; {found.infl:g}, mem &ge; {found.mem:g}, same label"
    )
    needed = "more than 10<sup>6</sup>" if row.models_needed is None else f"{row.models_needed:,}"
    cells = [
        _num(row.findings),
        _num(row.threshold),
        _num(row.mirror),
        f"{row.n_tests:,}",
        f"{row.cutoff:.2g}",
        _num(row.base_rate, 2),
        needed,
    ]
    head = [
        f"findings (q &le; {found.fdr:g})",
        "plain threshold",
        "mirrored threshold",
        "tests",
        "per-test cutoff",
        "base rate",
        f"models for 80% power at {effect:g}",
    ]
    return (
        f"<p><b>Findings</b> ({what}): Benjamini-Hochberg at FDR {found.fdr:g} over every "
        "defined test, one-sided exact tests, beside what the paper's plain threshold selects "
        "and what it selects with the sign flipped (its noise floor). The last column is the "
        f"number of models at which an effect of {effect:g} would be found with 80% power at "
        "this run's per-test cutoff (at FDR/tests where nothing passed), at the median base "
        "rate of the examples where an effect that size is possible.</p>"
        + "<table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody><tr>"
        + "".join(f"<td>{c}</td>" for c in cells)
        + "</tr></tbody></table>"
    )


def _pairs_section(
    analysis: RunAnalysis, images, gallery_size: int, max_rows: int
) -> tuple[str, str, str]:
    pairs, class_names = analysis.pairs, analysis.class_names
    infl, mem, mirror = analysis.infl, analysis.mem, analysis.mirror_pairs
    selection = (
        f"findings at FDR {analysis.fdr:g} (q &le; {analysis.fdr:g}, the influence and the "
        "memorization both declared positive)"
        if analysis.fdr is not None
        else "the paper's plain rule"
    )
    content = (
        f"<p>Pairs (train i, test j) with infl(i, j) &ge; {infl:g}, mem(i) &ge; {mem:g} and the "
        "same label: the test example is classified correctly far more often by the models "
        f"that trained on i. Shown: {selection}.</p>"
        + _findings_table(analysis, "pairs")
        + _summary_table([("this run", analysis.pair_summary)])
    )
    if not len(pairs):
        return "pairs", "High-influence pairs", content + "<p>No pair passes the selection.</p>"
    if analysis.fdr is None:
        content += (
            f"<p>Noise floor: {mirror:,} pairs pass the same selection with the sign of the "
            f"influence flipped (infl &le; &minus;{infl:g}), so at least about "
            f"{min(mirror, len(pairs)):,} of the {len(pairs):,} selected pairs are expected to "
            "be noise.</p>"
        )
        median_se = float(pairs["infl_se"].median())
        if median_se > NOISY_SE:
            content += _note(
                f"The median standard error of these influence estimates is {median_se:.3f}; "
                f"a pair within about {2 * median_se:.2f} of the threshold may be noise."
            )
    content += _plot(plots.pair_histograms(pairs["infl"], pairs["mem"]), "pair histograms")
    top = pairs.head(gallery_size)
    if not isinstance(images, str):
        figures = [
            f'<figure class="pair"><div>{images.train(int(r.train_index))}'
            f"{images.test(int(r.test_index))}</div><figcaption>train "
            f"#{int(r.train_index)} &rarr; test #{int(r.test_index)} "
            f"({_e(class_names[int(r.label)])})<br>infl {r.infl:.2f} "
            f"[{r.infl_low:.2f}, {r.infl_high:.2f}], mem {r.mem:.2f}</figcaption></figure>"
            for r in top.itertuples(index=False)
        ]
        content += "<h3>Strongest pairs (train left, test right)</h3>"
        content += f'<div class="gallery">{"".join(figures)}</div>'
    else:
        content += f'<p class="muted">{_e(images)}</p>'
    rows = [
        [
            str(int(r.train_index)),
            str(int(r.test_index)),
            _e(class_names[int(r.label)]),
            _num(r.infl),
            f"[{r.infl_low:.2f}, {r.infl_high:.2f}]",
            f"{r.p:.2g}",
            "&ndash;" if np.isnan(r.q) else f"{r.q:.2g}",
            _num(r.mem),
            "&ndash;" if np.isnan(r.mem_q) else f"{r.mem_q:.2g}",
        ]
        for r in pairs.head(max_rows).itertuples(index=False)
    ]
    content += (
        f"<details><summary>Pair table ({min(len(pairs), max_rows):,} of {len(pairs):,} "
        "pairs)</summary>"
    )
    content += _table(
        ["train", "test", "label", "infl", "95% CI", "p", "q", "mem", "mem q"],
        rows,
        text_columns=(2,),
    )
    return "pairs", "High-influence pairs", content


def _summary_table(named: Sequence[tuple[str, dict]]) -> str:
    head = [
        "",
        "pairs",
        "unique test (% of test)",
        "single-influencer tests",
        "unique train",
        "most influencers per test",
    ]
    rows = []
    for name, s in named:
        pct = f" ({s['unique_test_pct']:.2f}%)" if "unique_test_pct" in s else ""
        rows.append(
            [
                _e(name),
                _num(s["pairs"]),
                f"{s['unique_test']:,}{pct}",
                _num(s["single_influencer_tests"]),
                _num(s["unique_train"]),
                _num(s["max_influencers_per_test"]),
            ]
        )
    return _table(head, rows, text_columns=(0,))


def _agreement_section(analysis: RunAnalysis) -> tuple[str, str, str]:
    content = ""
    row = analysis.split_half
    if row is not None:
        mem_a, mem_b = analysis.halves_mem
        content += (
            f"<h3>Split-half reliability</h3><p>The {analysis.estimates.n_models:,} models "
            f"split at random into two independent runs of {row['models_a']:,} and "
            f"{row['models_b']:,} models. Agreement here is a floor: the full run's estimates "
            "have about 1/&radic;2 of these halves' standard errors.</p>"
            + _agreement_table([("half A vs half B", row)])
            + _plot(
                plots.scatter_plot(mem_a, mem_b, "mem, half A", "mem, half B"),
                "split-half scatter",
            )
        )
    if analysis.comparisons:
        content += "<h3>Saved comparisons (<code>tailscope compare</code>)</h3>"
        content += _agreement_table([(c["other"], c) for c in analysis.comparisons])
    if not content:
        content = "<p>Too few models for a split-half comparison.</p>"
    return "agreement", "Agreement", content


def _agreement_table(named: Sequence[tuple[str, dict]]) -> str:
    head = [
        "comparison",
        "models",
        "Pearson mem",
        "Spearman mem",
        "Jaccard mem >= 0.25",
        "pairs",
        "Jaccard pairs",
        "mean |diff| mem",
        "expected from SEs",
        "mem findings of A replicated in B",
        "pair findings of A replicated in B",
    ]
    rows = [
        [
            _e(name),
            f"{r['models_a']:,} / {r['models_b']:,}",
            _num(r["pearson"]),
            _num(r["spearman"]),
            _num(r["jaccard_mem"]),
            f"{r['pairs_a']:,} / {r['pairs_b']:,}",
            _num(r["jaccard_pairs"]),
            f"{r['mean_abs_diff']:.4f} &plusmn; {r['mean_abs_diff_se']:.4f}",
            _num(r["expected_mean_abs_diff"], 4),
            _replicated(r, "mem_replicated", r.get("mem_findings_a")),
            _replicated(r, "pairs_replicated", r.get("pairs_a")),
        ]
        for name, r in named
    ]
    return _table(head, rows, text_columns=(0,))


def _replicated(row: dict, key: str, found: int | None) -> str:
    """``share of found`` or a dash (no findings, or a comparison of the plain rule)."""
    share = row.get(key)
    if share is None or found is None or np.isnan(share):
        return "&ndash;"
    return f"{_pct(share, 0)} of {found:,}"


def _marginal_utility_section(analysis: RunAnalysis) -> tuple[str, str, str]:
    result, run = analysis.marginal_utility, analysis.run
    name = "Marginal utility of memorized examples"
    if result is None:
        return (
            "marginal-utility",
            name,
            (
                f'<p class="muted">Not run yet: <code>tailscope experiment removal '
                f"{_e(run.path)}</code> retrains without the examples with mem &ge; theta.</p>"
            ),
        )
    frame = result.frame()
    base = interval(result.baseline)
    rows = [
        [
            _num(r.theta, 2),
            _num(int(r.removed)),
            _pct(r.fraction_removed),
            _ci({"mean": r.targeted, "low": r.targeted_low, "high": r.targeted_high}),
            _ci({"mean": r.random, "low": r.random_low, "high": r.random_high}),
            _ci({"mean": r.gap, "low": r.gap_low, "high": r.gap_high}),
        ]
        for r in frame.itertuples(index=False)
    ]
    content = (
        f"<p>Models retrained on the whole train set without the examples with mem &ge; theta, "
        f"and without as many random examples; {result.n_repeats} models per condition "
        f"(paired seeds), 95% t intervals. All examples: {_ci(base)}."
        + (
            f" mem was estimated from {result.n_models_estimated:,} models."
            if result.n_models_estimated
            else ""
        )
        + "</p>"
        + _plot(plots.marginal_utility_plot(result), "marginal utility")
        + _table(
            [
                "theta",
                "removed",
                "fraction",
                "acc. without mem >= theta",
                "acc. without random",
                "random - targeted",
            ],
            rows,
        )
    )
    return "marginal-utility", name, content


def _influencers_section(analysis: RunAnalysis) -> tuple[str, str, str]:
    result, run = analysis.influencers, analysis.run
    name = "Removing the influencers"
    if result is None:
        return (
            "influencers",
            name,
            (
                f'<p class="muted">Not run yet: <code>tailscope experiment influencers '
                f"{_e(run.path)}</code> retrains without the train examples of the pairs.</p>"
            ),
        )
    labels = {
        "full": "trained on S",
        "without_influencers": "S minus the influencers",
        "without_random": "S minus as many random",
        "full - without_influencers": "difference (influencers)",
        "full - without_random": "difference (random)",
    }
    rows = [
        [_e(labels.get(r["condition"], r["condition"]))]
        + [
            _ci({"mean": r[s], "low": r[f"{s}_low"], "high": r[f"{s}_high"]})
            for s in InfluencerRemoval.SUBSETS
        ]
        for r in result.frame().to_dict("records")
    ]
    content = (
        f"<p>{len(result.influencers):,} influencers removed (the train examples of the "
        f"pairs); {len(result.influenced):,} influenced test examples; {result.n_repeats} "
        "models per condition (paired seeds), 95% t intervals.</p>"
        + _table(
            ["", "full test accuracy", "influenced test examples", "rest of the test set"],
            rows,
            text_columns=(0,),
        )
    )
    return "influencers", name, content


# ---- per-example scores -----------------------------------------------------------------
def _score_sections(analysis: RunAnalysis, images, size: int) -> list[tuple[str, str, str]]:
    saved = analysis.scores
    if saved is None:
        note = (
            f'<p class="muted">Not computed yet: <code>tailscope scores {_e(analysis.run.path)}'
            "</code> writes every per-example score of the run.</p>"
        )
        return [("scores", "Per-example scores", note)]
    sections = [_difficulty_section(analysis, saved.train, images, size)]
    if saved.lira is not None:
        sections.append(_membership_section(saved.train, saved.lira, analysis, images, size))
    if "label_quality" in saved.train or "label_quality" in saved.test:
        sections.append(_label_section(saved, analysis, images, size))
    return sections


def _ends_gallery(
    frame: pd.DataFrame, column: str, size: int, images, class_names, split="train", caption=None
) -> str:
    """Galleries of the ``size`` examples at each end of ``column``."""
    ranked = frame.dropna(subset=[column]).sort_values([column, "index"])
    out = ""
    for title, part in (("Lowest", ranked.head(size)), ("Highest", ranked.tail(size)[::-1])):
        out += f"<h3>{title} {_e(column)} ({split})</h3>" + _score_gallery(
            part, column, images, class_names, split, caption
        )
    return out


def _score_gallery(part: pd.DataFrame, column: str, images, class_names, split, caption=None):
    if isinstance(images, str):
        return f'<p class="muted">{_e(images)}</p>'
    image = images.train if split == "train" else images.test
    figures = []
    for r in part.to_dict("records"):
        text = caption(r) if caption else f"{_e(column)} {r[column]:.2f}"
        figures.append(
            f'<figure class="example">{image(int(r["index"]))}<figcaption>#{int(r["index"])} '
            f"{_e(class_names[int(r['label'])])}<br>{text}</figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(figures)}</div>'


def _difficulty_section(analysis: RunAnalysis, train: pd.DataFrame, images, size: int):
    column = "cscore" if "cscore" in train else "heldout_acc"
    described = (
        "the C-score (Jiang et al. 2021): held-out accuracy averaged over the run's subset ratios"
        if column == "cscore"
        else "held-out accuracy (Data-OOB): the accuracy of the models that did not train on "
        "the example (a run of several subset ratios also gives the C-score)"
    )
    values = train[column].to_numpy(dtype=float)
    defined = values[np.isfinite(values)]
    quantiles = np.quantile(defined, [0.01, 0.1, 0.5]) if len(defined) else [np.nan] * 3
    content = (
        f"<p>How typical an example is: {described}. Low values are the atypical and the "
        "mislabeled.</p>"
        + _table(
            ["examples", "mean", "1%", "10%", "median", "below 0.5"],
            [
                [
                    _num(len(defined)),
                    _num(float(defined.mean()) if len(defined) else np.nan),
                    *(_num(q) for q in quantiles),
                    _pct(float((defined < 0.5).mean()) if len(defined) else np.nan),
                ]
            ],
        )
        + _ends_gallery(train, column, size, images, analysis.class_names)
    )
    return "difficulty", "Held-out accuracy and C-score", content


def _membership_section(train, lira: dict, analysis: RunAnalysis, images, size: int):
    summary = lira["summary"]
    head = ["attack", *[k for k in summary[0] if k != "variant"]]
    rows = [[_e(r["variant"]), *(_num(r[k], 4) for k in head[1:])] for r in summary]
    by_mem = lira["vulnerability_by_memorization"]
    bin_rows = [
        [
            _e(r["mem_bin"]),
            _num(int(r["count"])),
            _num(r["vulnerability_mean"]),
            _num(r["vulnerability_se"]),
            _num(r["vulnerability_median"]),
        ]
        for r in by_mem
    ]
    curves = {name: tuple(curve) for name, curve in lira["roc"].items()}
    content = (
        "<p>Membership inference (LiRA, Carlini et al. 2022), leave-one-model-out: every model "
        "in turn is the target, the others are shadows; its training subset are the members. "
        f"Models of subset ratio {lira['ratio']:g}. Online fits the example's in and out "
        "logit-margin distributions, offline only the out one, <i>fixed</i> shares one "
        "variance; <i>global</i> is the loss-threshold attack without shadows.</p>"
        + _table(head, rows, text_columns=(0,))
        + _plot(plots.roc_loglog(curves, summary), "attack ROC, log-log")
        + "<h3>Vulnerability and memorization</h3><p>An example's vulnerability is the AUC of "
        "its own in- against its out-of-subset logit margins (0.5: membership invisible). "
        f"Spearman correlation with memorization {lira['spearman_vulnerability_mem']:.2f}.</p>"
        + _table(["mem bin", "examples", "mean", "se", "median"], bin_rows, text_columns=(0,))
        + _plot(
            plots.vulnerability_plot(train["vulnerability"], train["mem"], by_mem),
            "vulnerability against memorization",
        )
        + _ends_gallery(train, "vulnerability", size, images, analysis.class_names)
    )
    for line in lira.get("notes", []):
        content += f'<p class="muted">{_e(line)}</p>'
    return "membership", "Membership inference (LiRA)", content


def _label_section(saved, analysis: RunAnalysis, images, size: int):
    names = analysis.class_names
    rows = []
    for split, frame in (("train", saved.train), ("test", saved.test)):
        if "label_issue" in frame:
            flagged = int(frame["label_issue"].sum())
            rows.append(
                [split, _num(len(frame)), _num(flagged), _pct(flagged / max(len(frame), 1))]
            )

    def caption(r: dict) -> str:
        suggested = r.get("suggested_label")
        guess = "&ndash;" if pd.isna(suggested) else _e(names[int(suggested)])
        given = _e(names[int(r["label"])])
        return f"given {given}, suggested {guess}<br>quality {r['label_quality']:.2f}"

    content = (
        "<p>Label issues from the out-of-sample class probabilities (confident learning, "
        "cleanlab): <code>label_quality</code> in [0, 1], low when another class is far more "
        "probable than the given one; flagged below 0.25 (another class beats the given one "
        "by 0.5).</p>" + _table(["split", "examples", "flagged", "share"], rows, text_columns=(0,))
    )
    for split, frame in (("test", saved.test), ("train", saved.train)):
        if "label_quality" not in frame:
            continue
        flagged = frame[frame["label_issue"].astype(bool)].sort_values("label_quality")
        content += f"<h3>Flagged {split} examples (lowest quality first)</h3>" + _score_gallery(
            flagged.head(2 * size), "label_quality", images, names, split, caption
        )
    return "labels", "Label issues", content


def _released_section(name: str, pairs: pd.DataFrame, summary: dict) -> tuple[str, str, str]:
    content = (
        f"<p>The paper's released pairs from <code>{_e(name)}.npz</code> "
        "(infl &ge; 0.15, mem &ge; 0.25, same label).</p>"
        + _summary_table([(name, summary)])
        + _plot(plots.pair_histograms(pairs["infl"], pairs["mem"]), f"{name} histograms")
    )
    return f"released-{_slug(name)}", f"Released pairs: {name}", content


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-") or "file"
