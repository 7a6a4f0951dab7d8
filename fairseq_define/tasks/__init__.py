"""fairseq tasks of fairseq_define (auto-imported by ``--user-dir``)."""
