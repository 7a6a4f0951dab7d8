"""Benchmarks: ``python -m fairseq_define.bench {glt,...} --json PATH``. Each prints a table and writes JSON."""
