"""Benchmarks of Veil against other de-identification tools (not part of the package)."""
