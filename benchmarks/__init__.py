"""Benchmarks for slate-epoch, on the public API only: ``python -m benchmarks.<name>``."""
