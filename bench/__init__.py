"""Benchmarks of persona_vectors against the usual way of doing the same work: `python -m bench.run [--quick]`."""
