"""Criteria for fairseq_define (AR/TAR-regularised cross-entropy: `ar_tar_cross_entropy.py`; import it to register)."""
