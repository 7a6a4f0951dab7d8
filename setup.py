"""fairseq_define: DeFINE embeddings (Mehta et al., ICLR 2020) as a fairseq plugin.

torch and fairseq are deliberately *not* install requirements: installing this plugin must never rebuild or
replace a fairseq or torch the user already has (upstream fairseq 0.12 on Python <= 3.10, or fairseq-fixed on
3.11). `make install` sets up a complete environment.
"""
from setuptools import find_packages, setup

setup(
    name="fairseq_define",
    version="0.1.0",
    description="DeFINE: Deep Factorized Input Token Embeddings for fairseq",
    packages=find_packages(include=["fairseq_define", "fairseq_define.*"]),
    python_requires=">=3.8",
    install_requires=[],
    extras_require={"examples": ["sacrebleu", "sentencepiece", "matplotlib"]},
)
