"""Performance benchmarks of a trial: ``python -m benchmarks.trial [--quick]``."""
