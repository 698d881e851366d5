"""tailscope: find what neural networks memorize and why.

Held-out estimation of memorization and influence (Feldman & Zhang, NeurIPS 2020): train
many models on random subsets of the training set, record every model's predictions, and
estimate from masks and predictions

- ``mem(i)     = P[h(x_i) = y_i | i in S]   - P[h(x_i) = y_i | i not in S]``
- ``infl(i, j) = P[h(x'_j) = y'_j | i in S] - P[h(x'_j) = y'_j | i not in S]``

with standard errors. Start with :class:`Run`, or :mod:`tailscope.estimate` on raw arrays.
The package follows the data flow: ``data`` -> ``plan`` -> ``engine`` -> ``execute`` ->
``store`` -> ``estimate`` -> ``run`` -> ``experiments`` -> ``report`` -> ``cli``.
"""

__version__ = "0.2.0"

import types as _types

from tailscope import datasets, estimate, execute, scores
from tailscope.errors import TailscopeError
from tailscope.estimate import Estimates
from tailscope.models import Recipe, get_recipe
from tailscope.plan import SubsetPlan
from tailscope.run import Run, RunStatus
from tailscope.spec import RunSpec
from tailscope.stopping import max_models, until_se


class _ScoresModule(_types.ModuleType):
    """``tailscope.scores``: the per-example score functions, and callable as
    ``ts.scores(run)``: every score of a run (:func:`tailscope.experiments.scores`)."""

    def __call__(self, run: Run, **options: object):
        from tailscope.experiments.scores import scores as scores_of_run

        return scores_of_run(run, **options)


scores.__class__ = _ScoresModule

__all__ = [
    "Estimates",
    "Recipe",
    "Run",
    "RunSpec",
    "RunStatus",
    "SubsetPlan",
    "TailscopeError",
    "__version__",
    "datasets",
    "estimate",
    "execute",
    "get_recipe",
    "max_models",
    "scores",
    "until_se",
]
