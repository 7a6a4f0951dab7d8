"""Optimizers for fairseq_define (NT-ASGD: `nt_asgd.py`; import it to register `--optimizer nt_asgd`)."""
