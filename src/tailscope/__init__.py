"""tailscope: find what neural networks memorize and why.

Held-out estimation of memorization and influence (Feldman & Zhang, NeurIPS 2020): train
many models on random subsets of the training set, record every model's predictions, and
estimate from masks and predictions

- ``mem(i)     = P[h(x_i) = y_i | i in S]   - P[h(x_i) = y_i | i not in S]``
- ``infl(i, j) = P[h(x'_j) = y'_j | i in S] - P[h(x'_j) = y'_j | i not in S]``

with standard errors. Start with :class:`Run`, or :mod:`tailscope.estimate` on raw arrays.
"""

__version__ = "0.1.0"

from tailscope import datasets  # noqa: E402
from tailscope import estimate, execute  # noqa: E402
from tailscope.errors import TailscopeError  # noqa: E402
from tailscope.models import Recipe, get_recipe  # noqa: E402
from tailscope.plan import SubsetPlan  # noqa: E402
from tailscope.results import Estimates  # noqa: E402
from tailscope.run import Run  # noqa: E402

__all__ = [
    "Estimates",
    "Recipe",
    "Run",
    "SubsetPlan",
    "TailscopeError",
    "__version__",
    "datasets",
    "estimate",
    "execute",
    "get_recipe",
]
