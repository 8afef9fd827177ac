"""``python -m cluster`` is the ``canopy`` command."""

import sys

from cluster.cli import main

sys.exit(main())
