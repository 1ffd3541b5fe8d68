"""Backburner's benchmarks: `make bench` or `make bench-quick` writes `BENCHMARKS.md`."""
