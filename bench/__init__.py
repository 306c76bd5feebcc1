"""`make bench`: how fast the coordinator brings many machines up, against the raw-SSH limit.

Run with `python -m bench.run` (see bench/run.py and docs/benchmarks.md). Not part of the
test suite: every figure is printed against its target, none is asserted.
"""
