"""``python -m loopkeeper_bench``: the same as ``benchmarks/bench.py``."""

import sys

from .cli import main

sys.exit(main())
