"""The DeFINE models for fairseq (each module registers its model on import; `fairseq_define.plugin` imports them)."""
