"""Benchmarks: python -m benchmarks ..."""
