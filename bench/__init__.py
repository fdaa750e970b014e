"""Benchmarks against other tools (not part of the test suite). Run all: `python -m bench`."""
