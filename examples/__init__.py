"""Runnable recipes and studies (run from the repository root as `python -m examples....`)."""
