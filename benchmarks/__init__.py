"""Benchmarks: ``python -m benchmarks {glt,...} --json PATH``. Each prints a table and writes JSON."""
