"""Throughput benchmarks (not tests): see benchmarks/RESULTS.md."""
