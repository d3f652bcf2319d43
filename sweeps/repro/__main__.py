"""``python -m sweeps.repro``: see ``sweeps.repro.cli``."""

import sys

from sweeps.repro.cli import main

sys.exit(main())
