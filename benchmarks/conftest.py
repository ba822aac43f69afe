"""Benchmarks live outside the default test paths: run them with ``make bench``."""
