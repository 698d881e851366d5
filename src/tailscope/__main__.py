"""``python -m tailscope``: the same command line as the ``tailscope`` script."""

import sys

from tailscope.cli import main

sys.exit(main())
