"""Benchmarks of dask_sgd (see docs/benchmarks.md)."""
