"""Write digit images from the shipped models: `python scripts/sample.py --help`.

The same command is installed as `samplax-sample` and runs as `python -m samplax`.
"""

import sys

from samplax.cli import main

if __name__ == "__main__":
    sys.exit(main())
