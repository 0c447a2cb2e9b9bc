"""Benchmarks: each script runs its candidates side by side in one run and prints ratios."""
