"""``tailscope.datasets``: the public name of :mod:`tailscope.data` (``ts.datasets.load``)."""

from tailscope.data import *  # noqa: F403
from tailscope.data import __all__  # noqa: F401
