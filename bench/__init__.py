"""Benchmarks and fault runs for broadcast-hub: `python -m bench --help`."""
