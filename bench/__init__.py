"""Benchmarks (`make bench`): each module prints its figures and writes them to .bench/<name>.md."""
