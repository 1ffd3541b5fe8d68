"""`python -m bench [--quick] [--only NAME]`: run the benchmarks and write BENCHMARKS.md."""

import sys

from bench.runner import main

sys.exit(main(sys.argv[1:]))
