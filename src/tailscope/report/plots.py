"""Figures of the report, drawn with matplotlib's Agg backend and returned as PNG data URIs.

Every function returns a ``data:image/png;base64,...`` string that an ``<img src>`` can take
as is, so the report is one self-contained HTML file. Figures are closed after drawing.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from tailscope.experiments.distribution import MemorizationDistribution
from tailscope.experiments.removal import MarginalUtility, interval

__all__ = [
    "class_histograms",
    "figure_uri",
    "image_uri",
    "marginal_utility_plot",
    "memorization_histogram",
    "pair_histograms",
    "roc_loglog",
    "scatter_plot",
    "vulnerability_plot",
]

#: Small multiples per class are drawn up to this many classes (CIFAR-100 gets bars only).
MAX_CLASS_PANELS = 20


def figure_uri(fig: Figure, dpi: int = 100) -> str:
    """Encode a figure as a PNG data URI and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_uri(image: ArrayLike, vmin: float, vmax: float) -> str:
    """One example as a PNG data URI: (H, W) grayscale, or (H, W, 3|4) / (3|4, H, W) colour.

    Pixel values are mapped linearly from ``[vmin, vmax]`` (the dataset's range) to 0..255.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    scale = (vmax - vmin) or 1.0
    pixels = np.clip(np.rint((image - vmin) / scale * 255), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    plt.imsave(buffer, pixels, format="png", cmap="gray", vmin=0, vmax=255)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def memorization_histogram(dist: MemorizationDistribution, title: str = "") -> str:
    """Fraction of examples per memorization bin on a linear scale (as in the paper) and on a
    log scale (which shows the tail), with the thresholds marked."""
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.4))
    widths = np.diff(dist.bin_edges)
    for ax, log in zip(axes, (False, True), strict=True):
        ax.bar(
            dist.bin_edges[:-1],
            dist.fraction,
            width=widths,
            align="edge",
            color="#3b6ea8",
            edgecolor="white",
            log=log,
        )
        for theta in dist.thresholds:
            ax.axvline(theta, color="#c0392b", linestyle=":", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_xlabel("memorization estimate (values < 0 in the first bin)")
        ax.set_ylabel("fraction of examples" + (" (log scale)" if log else ""))
    fig.suptitle(title or f"memorization of {dist.n_defined:,} train examples")
    fig.tight_layout()
    return figure_uri(fig)


def class_histograms(dist: MemorizationDistribution, class_names: list[str]) -> str:
    """Per-class fraction with mem >= the first threshold (bars), and per-class histograms as
    small multiples (log scale, shared axes) when there are at most
    :data:`MAX_CLASS_PANELS` classes."""
    n_classes = len(dist.class_count)
    small = n_classes <= MAX_CLASS_PANELS
    cols = min(5, n_classes)
    rows = -(-n_classes // cols) if small else 0
    fig = plt.figure(figsize=(max(6.4, 0.12 * n_classes), 2.6 + 1.6 * rows))
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=[1.6] + [1] * rows, hspace=0.7)
    bars = fig.add_subplot(grid[0, :])
    theta = dist.thresholds[0] if len(dist.thresholds) else 0.25
    bars.bar(np.arange(n_classes), np.nan_to_num(dist.class_above[:, 0]), color="#3b6ea8")
    bars.set_ylabel(f"fraction mem >= {theta:g}")
    if small:
        bars.set_xticks(np.arange(n_classes), class_names, rotation=30, ha="right", fontsize=8)
    else:
        bars.set_xlabel("class")
    widths = np.diff(dist.bin_edges)
    first = None
    for c in range(n_classes if small else 0):
        ax = fig.add_subplot(grid[1 + c // cols, c % cols], sharey=first)
        first = first or ax
        ax.bar(
            dist.bin_edges[:-1],
            dist.class_fraction[c],
            width=widths,
            align="edge",
            color="#3b6ea8",
            log=True,
        )
        ax.set_xlim(0, 1)
        ax.set_title(class_names[c], fontsize=8)
        ax.tick_params(labelsize=7)
        if c % cols:
            ax.tick_params(labelleft=False)
    if first is not None:
        first.set_ylim(bottom=min(1e-4, 0.5 / max(int(dist.class_count.max()), 1)))
    return figure_uri(fig)


def pair_histograms(infl: ArrayLike, mem: ArrayLike, title: str = "") -> str:
    """Histograms of the influence and of the memorization of selected pairs."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, values, name in ((axes[0], infl, "influence"), (axes[1], mem, "memorization")):
        values = np.asarray(values, dtype=np.float64)
        ax.hist(values, bins=np.linspace(0, 1, 21), color="#3b6ea8", edgecolor="white")
        ax.set_xlim(0, 1)
        ax.set_xlabel(name)
        ax.set_ylabel("pairs")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return figure_uri(fig)


def marginal_utility_plot(result: MarginalUtility) -> str:
    """Test accuracy against the fraction of train examples removed: removing mem >= theta
    versus removing as many random examples, with confidence intervals over the repeats."""
    frame = result.frame()
    base = interval(result.baseline)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    x = 100 * frame["fraction_removed"].to_numpy()
    for name, color, label in (
        ("targeted", "#c0392b", "remove mem >= theta"),
        ("random", "#3b6ea8", "remove as many random"),
    ):
        mean = 100 * frame[name].to_numpy()
        low = 100 * frame[f"{name}_low"].to_numpy()
        high = 100 * frame[f"{name}_high"].to_numpy()
        yerr = np.nan_to_num(np.stack([mean - low, high - mean]))
        ax.errorbar(x, mean, yerr=yerr, marker="o", color=color, label=label, capsize=3)
    ax.axhline(100 * base["mean"], color="grey", linestyle="--", linewidth=1, label="all examples")
    for xi, theta, mean in zip(x, frame["theta"], 100 * frame["targeted"], strict=True):
        ax.annotate(
            f"{theta:g}",
            (xi, mean),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=7,
            color="#c0392b",
        )
    ax.set_xlabel("train examples removed (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    return figure_uri(fig)


def scatter_plot(a: ArrayLike, b: ArrayLike, label_a: str, label_b: str) -> str:
    """``b`` against ``a`` (hexbin density beyond 5,000 points) with the identity line."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    if len(a) > 5000:
        ax.hexbin(a, b, gridsize=50, bins="log", cmap="Blues", extent=(-0.5, 1, -0.5, 1))
    else:
        ax.scatter(a, b, s=4, alpha=0.5, color="#3b6ea8")
    ax.plot([-0.5, 1], [-0.5, 1], color="grey", linewidth=1)
    ax.set_xlim(-0.5, 1)
    ax.set_ylim(-0.5, 1)
    ax.set_xlabel(label_a)
    ax.set_ylabel(label_b)
    return figure_uri(fig)


#: Colours of the membership attacks.
ATTACK_COLORS = {
    "online": "#c0392b",
    "online_fixed": "#e67e22",
    "offline": "#3b6ea8",
    "offline_fixed": "#7fa7d4",
    "global": "#555555",
}


def roc_loglog(curves: dict[str, tuple[ArrayLike, ArrayLike]], summary: list[dict]) -> str:
    """ROC curves of the membership attacks on log-log axes (where the low-FPR regime that
    matters shows), with chance and each attack's AUC and TPR at 0.1% FPR in the legend."""
    by_variant = {row["variant"]: row for row in summary}
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    lows = []
    for name, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
        keep = (fpr > 0) & (tpr > 0)
        lows.append(fpr[keep].min() if keep.any() else 1e-3)
        row = by_variant.get(name, {})
        auc, tpr_low = row.get("auc", np.nan), 100 * row.get("tpr@0.001", np.nan)
        label = f"{name}: AUC {auc:.3f}, TPR@0.1% {tpr_low:.2g}%"
        ax.plot(fpr[keep], tpr[keep], color=ATTACK_COLORS.get(name), linewidth=1.4, label=label)
    low = min(lows, default=1e-3)
    ax.plot([low, 1], [low, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1)
    ax.set_ylim(low, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("membership inference (leave-one-model-out)", fontsize=9)
    return figure_uri(fig)


def vulnerability_plot(vuln: ArrayLike, mem: ArrayLike, by_bin: list[dict]) -> str:
    """Vulnerability against memorization: the examples (hexbin beyond 5,000) and the mean
    vulnerability of each memorization bin with +-2 SE."""
    vuln, mem = np.asarray(vuln, dtype=np.float64), np.asarray(mem, dtype=np.float64)
    keep = ~(np.isnan(vuln) | np.isnan(mem))
    fig, ax = plt.subplots(figsize=(5.2, 4))
    if keep.sum() > 5000:
        ax.hexbin(
            mem[keep], vuln[keep], gridsize=50, bins="log", cmap="Blues", extent=(-0.5, 1, 0, 1)
        )
    else:
        ax.scatter(mem[keep], vuln[keep], s=4, alpha=0.4, color="#3b6ea8")
    rows = [r for r in by_bin if r["count"]]
    centers = [
        np.clip((max(r["mem_low"], -0.5) + min(r["mem_high"], 1)) / 2, -0.5, 1) for r in rows
    ]
    ax.errorbar(
        centers,
        [r["vulnerability_mean"] for r in rows],
        yerr=[2 * np.nan_to_num(r["vulnerability_se"]) for r in rows],
        color="#c0392b",
        marker="o",
        capsize=3,
        label="bin mean +- 2 SE",
    )
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(-0.5, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("memorization")
    ax.set_ylabel("vulnerability (AUC of in vs out phi)")
    ax.legend(fontsize=8, loc="lower right")
    return figure_uri(fig)
