"""The paper's analyses on the estimates of a run.

- :mod:`~tailscope.experiments.distribution`: histogram and tail fractions of memorization.
- :mod:`~tailscope.experiments.pairs`: the summary row of the high-influence pairs and their
  noise floor.
- :mod:`~tailscope.experiments.findings`: findings under FDR control beside the plain and
  mirrored threshold counts, and the K an effect of the threshold's size needs.
- :mod:`~tailscope.experiments.removal`: retraining without memorized examples (marginal
  utility) and without the influencers, through the run's executor.
- :mod:`~tailscope.experiments.agreement`: agreement between two runs, or two halves of one.
- :mod:`~tailscope.experiments.released`: the paper's released pair files.
- :mod:`~tailscope.experiments.scores`: every per-example score of a run (``ts.scores``).
- :mod:`~tailscope.experiments.analysis`: all of them on one run, as the report shows them.
"""

from tailscope.experiments.agreement import (
    agreement,
    compare_runs,
    jaccard,
    memorization_agreement,
    split_half,
)
from tailscope.experiments.analysis import RunAnalysis, analyze
from tailscope.experiments.distribution import (
    MemorizationDistribution,
    extremes,
    memorization_distribution,
)
from tailscope.experiments.findings import Findings, FindingsRow, findings
from tailscope.experiments.pairs import mirror_pair_count, pair_summary
from tailscope.experiments.released import load_released_pairs, released_test_size
from tailscope.experiments.removal import (
    InfluencerRemoval,
    MarginalUtility,
    interval,
    marginal_utility,
    removal_masks,
    remove_influencers,
)
from tailscope.experiments.scores import scores

__all__ = [
    "Findings",
    "FindingsRow",
    "InfluencerRemoval",
    "MarginalUtility",
    "MemorizationDistribution",
    "RunAnalysis",
    "agreement",
    "analyze",
    "compare_runs",
    "extremes",
    "findings",
    "interval",
    "jaccard",
    "load_released_pairs",
    "marginal_utility",
    "memorization_agreement",
    "memorization_distribution",
    "mirror_pair_count",
    "pair_summary",
    "released_test_size",
    "removal_masks",
    "remove_influencers",
    "scores",
    "split_half",
]
