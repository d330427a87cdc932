"""`python -m samplax`: the sampling command line (see samplax.cli)."""

import sys

from samplax.cli import main

sys.exit(main())
