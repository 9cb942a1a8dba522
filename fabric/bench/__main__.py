"""`python -m fabric.bench`: the engine benchmark (fabric/bench/engine_bench.py)."""
import sys

from .engine_bench import main

main(sys.argv[1:])
