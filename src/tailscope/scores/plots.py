"""Figures of the scores: the attack ROC on log-log axes, vulnerability against memorization.

Each function returns a :class:`matplotlib.figure.Figure` built without pyplot (no backend,
no global state), which the report encodes as it does its own figures
(``fig.savefig(buffer, format="png")``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from tailscope.errors import DataError
from tailscope.scores.lira import LiraEvaluation
from tailscope.scores.roc import Roc
from tailscope.scores.vulnerability import DEFAULT_MEM_BINS, vulnerability_by_memorization

__all__ = ["roc_figure", "vulnerability_figure"]

_COLORS = {
    "online": "#c0392b",
    "online_fixed": "#e67e22",
    "offline": "#3b6ea8",
    "offline_fixed": "#7fa7d4",
    "global": "#555555",
}


def roc_figure(rocs: LiraEvaluation | Mapping[str, Roc], title: str = "") -> Figure:
    """ROC curves of the attack variants on log-log axes, with chance and AUC / TPR@0.1%."""
    if isinstance(rocs, LiraEvaluation):
        rocs = rocs.roc
    if not rocs:
        raise DataError("roc_figure needs at least one ROC")
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.add_subplot()
    low = min(1.0 / r.n_neg for r in rocs.values())
    ax.plot([low, 1], [low, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    for name, r in rocs.items():
        keep = (r.fpr > 0) & (r.tpr > 0)
        at = np.flatnonzero(np.isclose(r.fprs, 0.001))
        tpr01 = r.tprs[at[0]] if len(at) else np.interp(0.001, r.fpr, r.tpr)
        ax.plot(
            r.fpr[keep],
            r.tpr[keep],
            color=_COLORS.get(name),
            linewidth=1.4,
            label=f"{name}: AUC {r.auc:.3f}, TPR@0.1% {100 * tpr01:.2g}%",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1)
    ax.set_ylim(low, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "membership inference (leave-one-model-out)", fontsize=9)
    fig.tight_layout()
    return fig


def vulnerability_figure(
    vuln: ArrayLike, mem: ArrayLike, bins: Sequence[float] = DEFAULT_MEM_BINS
) -> Figure:
    """Vulnerability against memorization: the examples (hexbin beyond 5,000) and the mean
    vulnerability of each memorization bin with +-2 SE."""
    table = vulnerability_by_memorization(vuln, mem, bins)
    vuln, mem = np.asarray(vuln, dtype=np.float64), np.asarray(mem, dtype=np.float64)
    keep = ~(np.isnan(vuln) | np.isnan(mem))
    fig = Figure(figsize=(5.2, 4))
    ax = fig.add_subplot()
    if keep.sum() > 5000:
        ax.hexbin(
            mem[keep], vuln[keep], gridsize=50, bins="log", cmap="Blues", extent=(-0.5, 1, 0, 1)
        )
    else:
        ax.scatter(mem[keep], vuln[keep], s=4, alpha=0.4, color="#3b6ea8")
    which = np.searchsorted(np.asarray(bins, dtype=np.float64), mem[keep], side="right")
    centers = [
        np.median(mem[keep][which == b]) if count else np.nan
        for b, count in enumerate(table["count"])
    ]
    ax.errorbar(
        centers,
        table["vulnerability_mean"],
        yerr=2 * np.nan_to_num(table["vulnerability_se"].to_numpy()),
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
    ax.set_title(f"Spearman {table.attrs['spearman']:.2f}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
