"""Per-example scores from the pool of models trained on random subsets.

Pure functions of numpy arrays (the run store supplies them):

- :func:`heldout_accuracy`: held-out accuracy per example (Data-OOB), pooled and per ratio;
- :func:`cscore`: C-scores (Jiang et al. 2021), averaged over the ratios of a multi-ratio
  run; :func:`compare_cscores` / :func:`load_released_cscores` check them against a release;
- :func:`lira_evaluation`: the LiRA membership attack (Carlini et al. 2022), online, offline
  and fixed-variance, against the global loss-threshold attack, evaluated leave-one-model-
  out: ROC, TPR at low FPR and per-example TPR; :func:`gaussian_fits` / :func:`lira_scores`
  attack a new model;
- :func:`vulnerability`: per-example AUC of in vs out logit margins, and
  :func:`vulnerability_by_memorization`;
- :func:`label_issues`: label quality, issue flags and suggested labels from out-of-sample
  probabilities (cleanlab, an optional dependency);
- :func:`compute_scores`: the per-example train and test tables from whatever inputs a run has.
"""

from tailscope.scores.cscore import (
    compare_cscores,
    cscore,
    cscore_from_heldout,
    load_released_cscores,
)
from tailscope.scores.heldout import HeldOutAccuracy, heldout_accuracy
from tailscope.scores.label_issues import (
    LabelIssues,
    MissingDependencyError,
    cleanlab_version,
    label_issues,
)
from tailscope.scores.lira import (
    VARIANTS,
    GaussianFits,
    LiraEvaluation,
    gaussian_fits,
    lira_evaluation,
    lira_loo_scores,
    lira_scores,
)
from tailscope.scores.roc import Roc, roc, roc_from_scores
from tailscope.scores.table import ScoreTables, compute_scores
from tailscope.scores.vulnerability import vulnerability, vulnerability_by_memorization

__all__ = [
    "VARIANTS",
    "GaussianFits",
    "HeldOutAccuracy",
    "LabelIssues",
    "LiraEvaluation",
    "MissingDependencyError",
    "Roc",
    "ScoreTables",
    "cleanlab_version",
    "compare_cscores",
    "compute_scores",
    "cscore",
    "cscore_from_heldout",
    "gaussian_fits",
    "heldout_accuracy",
    "label_issues",
    "lira_evaluation",
    "lira_loo_scores",
    "lira_scores",
    "load_released_cscores",
    "roc",
    "roc_from_scores",
    "vulnerability",
    "vulnerability_by_memorization",
]
