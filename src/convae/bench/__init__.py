"""Benchmarks that ship with the package, so ``convae bench`` works from an installed copy."""
