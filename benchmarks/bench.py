#!/usr/bin/env python3
"""loopkeeper against its peers: the entry point of the ``loopkeeper_bench`` package beside it.

    ./scripts/bench --quick        # makes .venvs/bench, then runs this file
    python benchmarks/bench.py --quick --peers loopkeeper,rcts --metrics submit

The package's docstring describes the peers, metrics and method; BENCHMARKS.md the figures.
"""

import sys

from loopkeeper_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
