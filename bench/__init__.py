"""Benchmark scripts and the synthetic MovieLens generator; not part of the installed package."""
