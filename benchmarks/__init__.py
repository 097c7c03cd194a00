"""Benchmarks: `make bench-<service>` runs `python -m benchmarks.<service>`.

Each prints its figures beside a baseline measured in the same run, as a ratio. They are not
tests and are never run by `make test`.
"""
