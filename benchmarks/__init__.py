"""Benchmarks (`make bench`): each `bench_*.py` module has `run() -> dict`; results go to one JSON file."""
